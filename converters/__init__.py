"""tfbridge's shared interface: conversion to TFLite, calibration data, TFLite execution, parity
metrics, NPU readiness and reports.

Importing this package imports nothing heavy: each module says which environments it runs in.
Modules used in the TF 1.x environments are Python 3.7 compatible.
"""

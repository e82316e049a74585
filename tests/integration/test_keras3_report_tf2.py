"""The conversion report (converters/tf2/report.py) shows known upgrade hazards and the Keras 3 migration in
words, from the cells and migration.json that the parity and migrate steps write."""

import pytest

pytestmark = pytest.mark.tf2


def test_report_shows_hazards_and_the_migration_in_words(tmp_path):
    from converters import runfolder
    from converters.shared import hazards
    from converters.tf2 import report

    runfolder.write_json(str(tmp_path / "manifest.json"), {"model": {"path": "/m.h5"}, "origin": {"env": "tf1.13"}})
    found = hazards.lookup("rnn1", "LSTM", {"recurrent_activation": "hard_sigmoid"},
                           {"env": "tf2-keras3", "keras": "keras3", "origin": "tf1.13"})
    runfolder.write_json(str(tmp_path / "parity_tf2-keras3.json"), {
        "env": "tf2-keras3", "status": "mismatch", "max_abs": 0.02, "cosine": 0.9995,
        "first_divergent_layer": "rnn1", "hazards": found})
    runfolder.write_json(str(tmp_path / "parity_tf2.json"), {
        "env": "tf2", "status": "mismatch", "max_abs": 0.2, "cosine": 0.97, "first_divergent_layer": "conv9",
        "hazard_note": hazards.NO_KNOWN_HAZARD % ("conv9", "Conv2D")})
    runfolder.write_json(str(tmp_path / "migration.json"), {
        "status": "migrated", "path": "model.keras", "keras": "3.15.1", "renamed": {"conv1/7x7_s2": "conv1_7x7_s2"},
        "fixes": [{"hazard": "keras3-hard-sigmoid", "layer": "rnn1", "how": "gate columns x1.2"}]})
    data = report.write(str(tmp_path))
    assert data["migration"]["status"] == "migrated"
    for name in ("report.md", "report.html"):
        text = (tmp_path / name).read_text()
        assert "keras3-hard-sigmoid" in text and "clip(0.2 x + 0.5, 0, 1)" in text, name
        assert "no known upgrade hazard matches layer conv9" in text, name
        assert "model.keras" in text and "gate columns x1.2" in text, name

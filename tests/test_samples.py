"""The samples: every file passes ``casebridge check``, and the seed sample holds what the published report says.

The seed sample (samples/lcnec-cadonilimab-anlotinib.yaml) transcribes /work/shared/seed/000_*.txt
(Oncology Letters 29:27, 2025). The spot checks below are facts of that report; the "no invented values" checks
make sure the transcription did not add precision or numbers the text does not give.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from converter import api
from converter.case.checks import field_patterns, values_at
from converter.case.dates import iso_of
from converter.case.loader import CASE_SUFFIXES, load_case
from converter.cli import cli

from conftest import SHARED

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "samples"
SAMPLE_FILES = sorted(p for p in SAMPLES.iterdir() if p.suffix.lower() in CASE_SUFFIXES)
SEED_SAMPLE = SAMPLES / "lcnec-cadonilimab-anlotinib.yaml"


def test_there_are_samples() -> None:
    assert SEED_SAMPLE in SAMPLE_FILES
    assert len(SAMPLE_FILES) >= 3


@pytest.mark.parametrize("path", SAMPLE_FILES, ids=lambda p: p.name)
def test_sample_passes_check(path: Path) -> None:
    result = CliRunner().invoke(cli, ["check", str(path)])
    assert result.exit_code == 0, result.output
    assert result.stdout == ""  # no issue lines, not even warnings
    assert "1 valid, 0 invalid" in result.stderr


def test_whole_samples_folder_passes_check() -> None:
    result = CliRunner().invoke(cli, ["check", str(SAMPLES)])
    assert result.exit_code == 0, result.output
    assert f"{len(SAMPLE_FILES)} valid, 0 invalid" in result.stderr


@pytest.mark.parametrize("path", SAMPLE_FILES, ids=lambda p: p.name)
def test_sample_cites_its_source(path: Path) -> None:
    """A real report carries its DOI; an illustrative one says it is not a real patient and has no DOI."""
    source = load_case(path).data["source"]
    if "doi" not in source:
        assert "not a real patient" in source.get("note", ""), f"{path.name}: cite it as an illustrative composite"
        assert "pmid" not in source and "journal" not in source


def test_case_ids_are_unique_across_samples() -> None:
    ids = [load_case(p).case_id for p in SAMPLE_FILES]
    assert len(ids) == len(set(ids)), ids


def test_samples_readme_lists_every_sample() -> None:
    readme = (SAMPLES / "README.md").read_text(encoding="utf-8")
    for path in SAMPLE_FILES:
        assert path.name in readme, f"samples/README.md does not describe {path.name}"


# --- the seed case: what the report says --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def seed() -> dict:
    return load_case(SEED_SAMPLE).data


@pytest.fixture(scope="module")
def seed_text() -> str:
    """The published text, hyphens and spacing normalised (the PDF extraction uses U+2011 and line breaks)."""
    files = sorted((SHARED / "seed").glob("000_*.txt"))
    if not files:
        pytest.skip(f"seed text not available under {SHARED / 'seed'}")
    text = files[0].read_text(encoding="utf-8").replace("\u2011", "-")
    text = re.sub(r"-\n", "", text)  # words hyphenated at line ends: "neuro-\ntrophic"
    return re.sub(r"\s+", " ", text)


def by_id(items: list[dict]) -> dict[str, dict]:
    return {item["id"]: item for item in items}


def text_of(coded) -> str:
    return coded if isinstance(coded, str) else coded["text"]


def test_seed_patient(seed: dict) -> None:
    patient = seed["patient"]
    assert patient["age"]["value"] == 68 and patient["age"]["unit"] == "years"
    assert text_of(patient["sex"]) == "male"
    assert "pack_years" not in patient["smoking"]  # "significant smoking history", no number


def test_seed_six_therapy_lines_in_order(seed: dict) -> None:
    lines = seed["therapy_lines"]
    assert [line["number"] for line in lines] == [1, 2, 3, 4, 5, 6]
    drugs = [[text_of(a["drug"]).lower() for a in line["agents"]] for line in lines]
    assert drugs == [
        ["etoposide", "cisplatin", "tisleslizumab"],  # printed 'Tisleslizumab' (sic)
        ["anlotinib", "tisleslizumab"],
        ["temozolomide", "capecitabine"],
        ["vinorelbine"],
        ["irinotecan"],
        ["cadonilimab", "anlotinib"],
    ]
    assert lines[1]["cycles"] == 9  # "second-line treatment for nine cycles"


def test_seed_line_one_doses_and_schedule(seed: dict) -> None:
    agents = by_id(seed["therapy_lines"][0]["agents"])
    assert agents["l1-etoposide"]["dose"] == {"value": 100, "unit": "mg/m2"}
    assert agents["l1-cisplatin"]["dose"] == {"value": 25, "unit": "mg/m2"}
    for agent in ("l1-etoposide", "l1-cisplatin"):
        schedule = agents[agent]["schedule"]
        assert schedule["days"] == [1, 2, 3]
        assert schedule["cycle_length"] == {"value": 3, "unit": "weeks"}


def test_seed_three_variants_with_vaf(seed: dict) -> None:
    (ngs,) = seed["genomic_tests"]
    assert ngs["genes_tested_count"] == 139
    assert ngs["depth"]["tumor"] == 1000 and ngs["depth"]["normal"] == 300
    variants = [(text_of(v["gene"]), v["hgvs_c"], v["vaf"]["value"], v["vaf"]["unit"]) for v in ngs["variants"]]
    assert variants == [
        ("RB1", "c.137+1del", 55.1, "%"),
        ("TP53", "c.404G>T", 64.2, "%"),
        ("TP53", "c.393C>G", 63.7, "%"),
    ]


def test_seed_eight_negative_genes(seed: dict) -> None:
    (ngs,) = seed["genomic_tests"]
    genes = [text_of(n["gene"]) for n in ngs["negatives"]]
    assert genes == ["EGFR", "ALK", "ROS1", "MET", "KRAS", "RET", "NTRK", "BRAF"]
    assert all(set(n["alterations"]) == {"mutation", "fusion"} for n in ngs["negatives"])


def test_seed_immunohistochemistry(seed: dict) -> None:
    path = {text_of(p["marker"]): p for p in seed["pathology"]}
    assert path["PD-L1"]["scoring"] == {"system": "TPS", "value": 2, "unit": "%"}
    assert path["Ki-67"]["scoring"]["value"] == 80
    results = {m: text_of(p["result"]) for m, p in path.items() if m not in ("PD-L1", "hematoxylin and eosin morphology")}
    assert results == {"chromogranin A": "+", "synaptophysin": "+", "CD56": "+", "NapsinA": "-", "Ki-67": "+",
                       "P40": "-", "thyroid transcription factor-1": "+"}


def test_seed_stage_and_size(seed: dict) -> None:
    (dx,) = seed["diagnoses"]
    (stage,) = dx["staging"]
    assert (stage["t"], stage["n"], stage["m"], stage["stage_group"]) == ("T1b", "N2", "M0", "IIIA")
    assert str(stage["edition"]) == "8"
    (size,) = dx["tumor_size"]
    assert (size["longest"], size["other"], size["unit"]) == (29.5, 19.1, "mm")


def test_seed_progrp_range_without_invented_values(seed: dict) -> None:
    labs = by_id(seed["labs"])
    progrp = labs["lab-progrp"]
    assert progrp["reference_range"]["low"] == 3
    assert progrp["reference_range"]["high"] == 77.8
    assert progrp["reference_range"]["unit"] == "pg/mL"
    assert "value" not in progrp  # the values are only in Fig. 3
    assert all("value" not in lab for lab in seed["labs"]), "the report prints no lab value"


def test_seed_responses(seed: dict) -> None:
    ras = by_id(seed["response_assessments"])
    assert text_of(ras["ra-2021-03"]["response"]) == "partial response"
    assert text_of(ras["ra-2023-01"]["response"]) == "partial response"  # after 3 cycles of cadonilimab
    assert ras["ra-2023-01"]["line"] == "line-6"
    assert "criteria" not in ras["ra-2023-03"]  # "continued to shrink": descriptive, not RECIST
    assert seed["therapy_lines"][5]["best_response"] == "ra-2023-01"


def test_seed_adverse_events(seed: dict) -> None:
    aes = by_id(seed["adverse_events"])
    irr = aes["ae-irr-c4"]
    assert irr["grade"] == 2 and irr["suspected_agents"] == ["l6-cadonilimab"]
    (steroid,) = irr["treatments"]
    assert text_of(steroid["drug"]) == "methylprednisolone" and steroid["dose"] == {"value": 40, "unit": "mg"}
    assert aes["ae-te-fistula"]["onset"] == "2023-02"
    assert "grade" not in aes["ae-te-fistula"]  # not reported


def test_seed_death(seed: dict) -> None:
    outcome = seed["outcome"]
    assert outcome["status"] == "dead"
    assert outcome["date"] == "2023-03"
    causes = {text_of(c["cause"]): c["type"] for c in outcome["causes_of_death"]}
    assert causes == {"respiratory failure": "primary", "lung infection": "contributing"}


def test_seed_i125_seeds(seed: dict) -> None:
    (rt,) = seed["radiotherapy"]
    assert rt["seeds"]["isotope"] == "I-125"
    assert rt["start"] == "2022-06"
    assert "dose" not in rt  # not reported


def test_seed_dates_keep_month_precision(seed: dict) -> None:
    """The report gives months only: no transcribed date may be more precise than YYYY-MM."""
    dates = []
    for pattern in field_patterns("date"):
        for _, value in values_at(seed, pattern):
            if (iso := iso_of(value)) is not None:
                dates.append(iso)
    assert dates and all(len(d) == 7 for d in dates), [d for d in dates if len(d) != 7]
    assert min(dates) == "2020-12" and max(dates) == "2023-03"


def test_seed_numbers_are_in_the_published_text(seed: dict, seed_text: str) -> None:
    """Every dose, VAF and the proGRP range of the sample are printed in the report (nothing invented)."""
    doses = {f"{agent['dose']['value']:g} {agent['dose']['unit']}"
             for line in seed["therapy_lines"] for agent in line["agents"]}
    doses |= {f"{t['dose']['value']:g} {t['dose']['unit']}"
              for ae in seed["adverse_events"] for t in ae.get("treatments", [])}
    for dose in sorted(doses):
        assert dose in seed_text, dose
    for variant in seed["genomic_tests"][0]["variants"]:
        assert f"abundance, {variant['vaf']['value']}%" in seed_text
        assert variant["hgvs_c"].replace("+", " +") in seed_text or variant["hgvs_c"] in seed_text
    assert "reference value: 3-77.8 pg/ml" in seed_text
    assert "tumor proportion score, 2%" in seed_text
    assert "29.5x19.1 mm" in seed_text


def test_other_samples_check_through_the_api() -> None:
    results = api.check([str(p) for p in SAMPLE_FILES])
    assert all(r.ok for r in results), [str(i) for r in results for i in r.issues]


# --- the illustrative samples carry what they were written to exercise ---------------------------------------------

def test_breast_sample_paths() -> None:
    data = load_case(SAMPLES / "breast-her2-alive.yaml").data
    path = by_id(data["pathology"])
    assert path["ihc-her2"]["scoring"]["value"] == 2 and text_of(path["fish-her2-ratio"]["result"]) == "amplified"
    assert path["fish-her2-ratio"]["value"]["value"] == 2.6
    assert path["ihc-pr"]["scoring"]["system"] == "H-score"
    stage = by_id(data["diagnoses"][0]["staging"])["stg-pathological"]
    assert (stage["t"], stage["n"], stage["m"], stage["stage_group"]) == ("pT2", "pN1a", "M0", "IIB")
    assert {(r["dose"]["value"], r["fractions"]) for r in data["radiotherapy"]} == {(50, 25), (10, 5)}
    ca153 = [lab for lab in data["labs"] if text_of(lab["test"]) == "CA 15-3"]
    assert all(lab["value"]["unit"] == "U/mL" and lab["reference_range"]["high"] == 25 for lab in ca153)
    neutropenia = by_id(data["adverse_events"])["ae-neutropenia"]
    assert neutropenia["grade"] == 3 and text_of(neutropenia["treatments"][0]["drug"]) == "filgrastim"
    assert any(ra.get("target_lesions") for ra in data["response_assessments"])
    assert data["outcome"]["status"] == "alive" and "last_follow_up" in data["outcome"]


def test_relative_sample_has_no_calendar_date() -> None:
    data = load_case(SAMPLES / "relative-dates-unnamed-regimen.yaml").data
    relative = 0
    for pattern in field_patterns("date"):
        for _, value in values_at(data, pattern):
            assert iso_of(value) is None, value
            relative += 1
    assert relative >= 15
    assert data["outcome"]["status"] == "dead"
    assert [text_of(c["cause"]) for c in data["outcome"]["causes_of_death"]] == ["unknown"]
    assert text_of(data["therapy_lines"][0]["regimen"]) == "platinum doublet"
    assert text_of(data["patient"]["sex"]) == "not reported"


def _relative_texts(data: dict):
    for pattern in field_patterns("date"):
        for path, value in values_at(data, pattern):
            if isinstance(value, dict):
                yield path, value["text"]


@pytest.mark.parametrize("path", SAMPLE_FILES, ids=lambda p: p.name)
def test_relative_dates_keep_anchor_and_cycle_as_fields(path: Path) -> None:
    """'anchor: x' inside a relative date's text is not checked or resolved: it must be a field."""
    data = load_case(path).data
    embedded = [(p, t) for p, t in _relative_texts(data) if re.search(r"\b(anchor|cycle|direction):", t)]
    assert not embedded, embedded

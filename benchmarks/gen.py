"""Deterministic generator of synthetic oncology case reports shaped like the seed case.

Every generated case is valid against ``schemas/case-report.schema.json`` and the loader's semantic checks
(unique ids, resolving references, real dates, end not before start, percentages in range). Cases vary in
shape the way published reports do: 1-7 therapy lines of 1-4 agents, 2-12 IHC/pathology results, 0-2
genomic tests with 0-8 variants and 0-10 negative genes, 0-12 labs, one response assessment or more per
line, 0-8 adverse events with treatments, partial dates (year, month or day precision) and some relative
timings ("during cycle 3", "2 months after diagnosis") anchored to other entities. About 3 % of coded terms
are misspelt or unknown on purpose so that the uncoded path of the mapping is exercised.

Vocabulary: the terms of the shipped terminology tables (``mappings/terminology/*.csv``) when they are
there, mixed with a built-in vocabulary of real drug names, regimens, IHC markers, genes with real HGVS
hotspots, labs with units and reference ranges, and CTCAE terms (used alone when no table is present).

Every case is made from its own random stream seeded by ``(seed, index)``, so ``generate(10, s)`` starts
with ``generate(5, s)`` and a case can be regenerated alone.

    python benchmarks/gen.py --cases 1000 --seed 1 --out /tmp/cases [--format json|yaml|ndjson]

These are SYNTHETIC cases, not real patients: every ``source.note`` says so.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import random
import re
import sys
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Iterator

ROOT = Path(__file__).resolve().parent.parent

# --------------------------------------------------------------------------------------------------------
# Built-in vocabulary (real names; used alone when the terminology tables are absent)
# --------------------------------------------------------------------------------------------------------

# drug: (dose value, unit, route, cycle days (None = continuous), cycle length in weeks, times per day)
DRUGS: dict[str, tuple[float, str, str, list[int] | None, int, int]] = {
    "cisplatin": (75, "mg/m2", "intravenous", [1], 3, 1),
    "carboplatin": (5, "AUC", "intravenous", [1], 3, 1),
    "pemetrexed": (500, "mg/m2", "intravenous", [1], 3, 1),
    "paclitaxel": (175, "mg/m2", "intravenous", [1], 3, 1),
    "nab-paclitaxel": (100, "mg/m2", "intravenous", [1, 8, 15], 4, 1),
    "docetaxel": (75, "mg/m2", "intravenous", [1], 3, 1),
    "etoposide": (100, "mg/m2", "intravenous", [1, 2, 3], 3, 1),
    "irinotecan": (180, "mg/m2", "intravenous", [1], 2, 1),
    "gemcitabine": (1000, "mg/m2", "intravenous", [1, 8], 3, 1),
    "vinorelbine": (25, "mg/m2", "intravenous", [1, 8], 3, 1),
    "temozolomide": (150, "mg/m2", "oral", [1, 2, 3, 4, 5], 4, 1),
    "capecitabine": (1000, "mg/m2", "oral", list(range(1, 15)), 3, 2),
    "oxaliplatin": (85, "mg/m2", "intravenous", [1], 2, 1),
    "fluorouracil": (400, "mg/m2", "intravenous", [1], 2, 1),
    "leucovorin": (400, "mg/m2", "intravenous", [1], 2, 1),
    "doxorubicin": (60, "mg/m2", "intravenous", [1], 3, 1),
    "cyclophosphamide": (600, "mg/m2", "intravenous", [1], 3, 1),
    "trastuzumab": (6, "mg/kg", "intravenous", [1], 3, 1),
    "pertuzumab": (420, "mg", "intravenous", [1], 3, 1),
    "trastuzumab deruxtecan": (5.4, "mg/kg", "intravenous", [1], 3, 1),
    "pembrolizumab": (200, "mg", "intravenous", [1], 3, 1),
    "nivolumab": (240, "mg", "intravenous", [1], 2, 1),
    "ipilimumab": (1, "mg/kg", "intravenous", [1], 6, 1),
    "atezolizumab": (1200, "mg", "intravenous", [1], 3, 1),
    "durvalumab": (1500, "mg", "intravenous", [1], 4, 1),
    "tislelizumab": (200, "mg", "intravenous", [1], 3, 1),
    "sintilimab": (200, "mg", "intravenous", [1], 3, 1),
    "camrelizumab": (200, "mg", "intravenous", [1], 3, 1),
    "cadonilimab": (10, "mg/kg", "intravenous infusion", [1], 3, 1),
    "bevacizumab": (15, "mg/kg", "intravenous", [1], 3, 1),
    "ramucirumab": (10, "mg/kg", "intravenous", [1], 3, 1),
    "cetuximab": (500, "mg/m2", "intravenous", [1], 2, 1),
    "anlotinib": (12, "mg", "oral", list(range(1, 15)), 3, 1),
    "osimertinib": (80, "mg", "oral", None, 4, 1),
    "gefitinib": (250, "mg", "oral", None, 4, 1),
    "alectinib": (600, "mg", "oral", None, 4, 2),
    "lorlatinib": (100, "mg", "oral", None, 4, 1),
    "crizotinib": (250, "mg", "oral", None, 4, 2),
    "dabrafenib": (150, "mg", "oral", None, 4, 2),
    "trametinib": (2, "mg", "oral", None, 4, 1),
    "sotorasib": (960, "mg", "oral", None, 3, 1),
    "letrozole": (2.5, "mg", "oral", None, 4, 1),
    "anastrozole": (1, "mg", "oral", None, 4, 1),
    "tamoxifen": (20, "mg", "oral", None, 4, 1),
    "palbociclib": (125, "mg", "oral", list(range(1, 22)), 4, 1),
    "fulvestrant": (500, "mg", "intramuscular", [1], 4, 1),
    "olaparib": (300, "mg", "oral", None, 4, 2),
    "regorafenib": (160, "mg", "oral", list(range(1, 22)), 4, 1),
    "sunitinib": (50, "mg", "oral", list(range(1, 29)), 6, 1),
    "cabozantinib": (60, "mg", "oral", None, 4, 1),
    "lenvatinib": (24, "mg", "oral", None, 4, 1),
    "sorafenib": (400, "mg", "oral", None, 4, 2),
    "enzalutamide": (160, "mg", "oral", None, 4, 1),
    "abiraterone": (1000, "mg", "oral", None, 4, 1),
}

SUPPORTIVE = [
    ("methylprednisolone", 40, "mg", "intravenous"), ("prednisolone", 1, "mg/kg", "oral"),
    ("dexamethasone", 8, "mg", "oral"), ("loperamide", 4, "mg", "oral"), ("filgrastim", 5, "ug/kg", "subcutaneous"),
    ("levothyroxine", 50, "ug", "oral"), ("ondansetron", 8, "mg", "intravenous"), ("infliximab", 5, "mg/kg", "intravenous"),
    ("piperacillin-tazobactam", 4.5, "g", "intravenous"), ("amlodipine", 5, "mg", "oral"),
    ("enoxaparin", 1, "mg/kg", "subcutaneous"), ("diphenhydramine", 50, "mg", "intravenous"),
]

# Tumour profiles: what a report about each tumour type usually carries.
TUMOURS: list[dict[str, Any]] = [
    {"name": "lung adenocarcinoma", "histology": "adenocarcinoma", "site": "lung", "staging": "AJCC", "edition": 8,
     "sex": None, "markers": ["TTF-1", "NapsinA", "PD-L1", "Ki-67", "CK7", "CK20", "P40", "ALK (D5F3)", "ROS1"],
     "genes": ["EGFR", "KRAS", "ALK", "ROS1", "MET", "RET", "BRAF", "TP53", "STK11", "KEAP1", "ERBB2", "NTRK1"],
     "regimens": [["carboplatin", "pemetrexed", "pembrolizumab"], ["cisplatin", "pemetrexed"], ["osimertinib"],
                  ["docetaxel", "ramucirumab"], ["alectinib"], ["carboplatin", "paclitaxel", "bevacizumab", "atezolizumab"],
                  ["nivolumab", "ipilimumab"], ["gefitinib"], ["sotorasib"], ["lorlatinib"], ["anlotinib"], ["docetaxel"]],
     "labs": ["carcinoembryonic antigen", "CYFRA 21-1", "neuron-specific enolase"],
     "mets": ["brain", "bone", "liver", "left adrenal gland", "contralateral lung", "pleura", "mediastinal lymph nodes"]},
    {"name": "pulmonary large cell neuroendocrine carcinoma", "histology": "large cell neuroendocrine carcinoma",
     "site": "lung", "staging": "AJCC", "edition": 8, "sex": None,
     "markers": ["chromogranin A", "synaptophysin", "CD56", "NapsinA", "Ki-67", "P40", "thyroid transcription factor-1", "PD-L1", "INSM1"],
     "genes": ["RB1", "TP53", "STK11", "KEAP1", "EGFR", "ALK", "ROS1", "MET", "KRAS", "RET", "BRAF", "NTRK"],
     "regimens": [["etoposide", "cisplatin"], ["etoposide", "carboplatin", "atezolizumab"], ["anlotinib", "tislelizumab"],
                  ["temozolomide", "capecitabine"], ["vinorelbine"], ["irinotecan"], ["cadonilimab", "anlotinib"]],
     "labs": ["gastrin-releasing peptide precursor", "neuron-specific enolase", "carcinoembryonic antigen"],
     "mets": ["right hilar and mediastinal lymph nodes", "retroperitoneal lymph nodes", "liver", "bone", "brain"]},
    {"name": "small cell lung cancer", "histology": "small cell carcinoma", "site": "lung", "staging": "AJCC", "edition": 8,
     "sex": None, "markers": ["synaptophysin", "chromogranin A", "CD56", "Ki-67", "TTF-1", "INSM1"],
     "genes": ["TP53", "RB1", "PTEN", "NOTCH1", "MYC"],
     "regimens": [["etoposide", "carboplatin", "durvalumab"], ["etoposide", "cisplatin"], ["irinotecan"], ["anlotinib"],
                  ["temozolomide"]],
     "labs": ["neuron-specific enolase", "gastrin-releasing peptide precursor"],
     "mets": ["brain", "liver", "bone", "adrenal gland", "mediastinal lymph nodes"]},
    {"name": "invasive ductal carcinoma of the breast", "histology": "invasive ductal carcinoma", "site": "breast",
     "staging": "AJCC", "edition": 8, "sex": "female",
     "markers": ["estrogen receptor", "progesterone receptor", "HER2", "Ki-67", "GATA3", "E-cadherin", "CK5/6", "AR"],
     "genes": ["PIK3CA", "BRCA1", "BRCA2", "ESR1", "TP53", "ERBB2", "PTEN", "AKT1"],
     "regimens": [["doxorubicin", "cyclophosphamide"], ["paclitaxel", "trastuzumab", "pertuzumab"], ["trastuzumab deruxtecan"],
                  ["letrozole", "palbociclib"], ["fulvestrant"], ["tamoxifen"], ["capecitabine"], ["olaparib"], ["anastrozole"]],
     "labs": ["CA 15-3", "carcinoembryonic antigen", "absolute neutrophil count"],
     "mets": ["liver", "bone", "lung", "axillary lymph nodes", "brain"]},
    {"name": "adenocarcinoma of the colon", "histology": "adenocarcinoma", "site": "sigmoid colon", "staging": "AJCC",
     "edition": 8, "sex": None, "markers": ["CDX2", "CK20", "CK7", "MLH1", "MSH2", "MSH6", "PMS2", "SATB2"],
     "genes": ["KRAS", "NRAS", "BRAF", "APC", "TP53", "PIK3CA", "SMAD4", "ERBB2"],
     "regimens": [["oxaliplatin", "leucovorin", "fluorouracil"], ["irinotecan", "leucovorin", "fluorouracil", "bevacizumab"],
                  ["capecitabine", "oxaliplatin"], ["cetuximab", "irinotecan"], ["regorafenib"], ["pembrolizumab"]],
     "labs": ["carcinoembryonic antigen", "CA 19-9", "hemoglobin"],
     "mets": ["liver", "lung", "peritoneum", "para-aortic lymph nodes"]},
    {"name": "gastric adenocarcinoma", "histology": "signet ring cell carcinoma", "site": "stomach", "staging": "AJCC",
     "edition": 8, "sex": None, "markers": ["HER2", "PD-L1", "Claudin 18.2", "MLH1", "PMS2", "EBER", "Ki-67"],
     "genes": ["ERBB2", "TP53", "CDH1", "PIK3CA", "KRAS", "FGFR2", "MET"],
     "regimens": [["capecitabine", "oxaliplatin", "nivolumab"], ["trastuzumab", "cisplatin", "capecitabine"],
                  ["paclitaxel", "ramucirumab"], ["irinotecan"], ["sintilimab", "oxaliplatin", "capecitabine"]],
     "labs": ["carcinoembryonic antigen", "CA 19-9", "CA 72-4"],
     "mets": ["peritoneum", "liver", "ovary", "supraclavicular lymph node"]},
    {"name": "cutaneous melanoma", "histology": "superficial spreading melanoma", "site": "skin of the back",
     "staging": "AJCC", "edition": 8, "sex": None, "markers": ["S100", "SOX10", "Melan-A", "HMB-45", "PD-L1", "Ki-67", "PRAME"],
     "genes": ["BRAF", "NRAS", "KIT", "NF1", "TERT", "CDKN2A"],
     "regimens": [["nivolumab", "ipilimumab"], ["pembrolizumab"], ["dabrafenib", "trametinib"], ["nivolumab"]],
     "labs": ["lactate dehydrogenase", "S100 protein"],
     "mets": ["lung", "brain", "liver", "subcutaneous tissue", "inguinal lymph nodes"]},
    {"name": "high-grade serous carcinoma of the ovary", "histology": "high-grade serous carcinoma", "site": "ovary",
     "staging": "FIGO", "edition": "2014", "sex": "female", "markers": ["WT1", "PAX8", "p53", "p16", "ER", "Ki-67"],
     "genes": ["TP53", "BRCA1", "BRCA2", "PALB2", "RAD51C", "CCNE1"],
     "regimens": [["carboplatin", "paclitaxel"], ["carboplatin", "paclitaxel", "bevacizumab"], ["olaparib"],
                  ["doxorubicin"], ["gemcitabine", "carboplatin"]],
     "labs": ["CA-125", "HE4", "hemoglobin"],
     "mets": ["peritoneum", "omentum", "liver", "pleura"]},
    {"name": "clear cell renal cell carcinoma", "histology": "clear cell carcinoma", "site": "left kidney",
     "staging": "AJCC", "edition": 8, "sex": None, "markers": ["PAX8", "CA-IX", "CD10", "RCC antigen", "Ki-67"],
     "genes": ["VHL", "PBRM1", "BAP1", "SETD2", "TP53"],
     "regimens": [["nivolumab", "ipilimumab"], ["pembrolizumab", "lenvatinib"], ["sunitinib"], ["cabozantinib"], ["sorafenib"]],
     "labs": ["hemoglobin", "lactate dehydrogenase", "creatinine"],
     "mets": ["lung", "bone", "brain", "adrenal gland"]},
    {"name": "prostate adenocarcinoma", "histology": "acinar adenocarcinoma", "site": "prostate", "staging": "AJCC",
     "edition": 8, "sex": "male", "markers": ["PSA", "NKX3.1", "AR", "synaptophysin", "Ki-67", "ERG"],
     "genes": ["AR", "BRCA2", "ATM", "TP53", "PTEN", "SPOP", "CDK12"],
     "regimens": [["enzalutamide"], ["abiraterone"], ["docetaxel"], ["olaparib"], ["cabozantinib"]],
     "labs": ["prostate-specific antigen", "alkaline phosphatase", "hemoglobin"],
     "mets": ["bone", "pelvic lymph nodes", "liver", "lung"]},
]

# gene: [(hgvs_c, hgvs_p, type)] real hotspots; genes not listed get a plausible substitution
VARIANTS: dict[str, list[tuple[str, str | None, str]]] = {
    "EGFR": [("c.2573T>G", "p.Leu858Arg", "missense"), ("c.2235_2249del", "p.Glu746_Ala750del", "deletion"),
             ("c.2369C>T", "p.Thr790Met", "missense")],
    "KRAS": [("c.34G>T", "p.Gly12Cys", "missense"), ("c.35G>A", "p.Gly12Asp", "missense"), ("c.35G>T", "p.Gly12Val", "missense")],
    "BRAF": [("c.1799T>A", "p.Val600Glu", "missense")],
    "PIK3CA": [("c.3140A>G", "p.His1047Arg", "missense"), ("c.1633G>A", "p.Glu545Lys", "missense")],
    "TP53": [("c.743G>A", "p.Arg248Gln", "missense"), ("c.524G>A", "p.Arg175His", "missense"), ("c.404G>T", "p.Cys135Phe", "missense"),
             ("c.393C>G", "p.Asn131Lys", "missense"), ("c.818G>A", "p.Arg273His", "missense")],
    "RB1": [("c.137+1del", None, "splice site")],
    "NRAS": [("c.182A>G", "p.Gln61Arg", "missense")],
    "ERBB2": [("c.2313_2324dup", "p.Tyr772_Ala775dup", "insertion")],
    "MET": [("c.3082+1G>T", None, "splice site (exon 14 skipping)")],
    "BRCA1": [("c.68_69del", "p.Glu23ValfsTer17", "frameshift")],
    "BRCA2": [("c.5946del", "p.Ser1982ArgfsTer22", "frameshift")],
    "PTEN": [("c.388C>T", "p.Arg130Ter", "nonsense")],
    "APC": [("c.4348C>T", "p.Arg1450Ter", "nonsense")],
    "STK11": [("c.109C>T", "p.Gln37Ter", "nonsense")],
    "ESR1": [("c.1610A>C", "p.Tyr537Ser", "missense")],
    "IDH1": [("c.395G>A", "p.Arg132His", "missense")],
    "VHL": [("c.499C>T", "p.Arg167Trp", "missense")],
    "SPOP": [("c.398T>G", "p.Phe133Cys", "missense")],
}

PANEL_GENES = ["EGFR", "ALK", "ROS1", "MET", "KRAS", "RET", "BRAF", "NTRK", "ERBB2", "PIK3CA", "TP53", "BRCA1", "BRCA2"]

# lab: (category, specimen, unit, low, high, typical value range)
LABS: dict[str, tuple[str, str, str, float | None, float, tuple[float, float]]] = {
    "carcinoembryonic antigen": ("tumor marker", "serum", "ng/mL", None, 5.0, (0.5, 250)),
    "CA 19-9": ("tumor marker", "serum", "U/mL", None, 37, (2, 2000)),
    "CA-125": ("tumor marker", "serum", "U/mL", None, 35, (5, 3000)),
    "CA 15-3": ("tumor marker", "serum", "U/mL", None, 25, (3, 300)),
    "CA 72-4": ("tumor marker", "serum", "U/mL", None, 6.9, (0.5, 150)),
    "HE4": ("tumor marker", "serum", "pmol/L", None, 140, (20, 1500)),
    "CYFRA 21-1": ("tumor marker", "serum", "ng/mL", None, 3.3, (0.5, 80)),
    "neuron-specific enolase": ("tumor marker", "serum", "ng/mL", None, 16.3, (3, 400)),
    "gastrin-releasing peptide precursor": ("tumor marker", "serum", "pg/mL", 3, 77.8, (10, 5000)),
    "prostate-specific antigen": ("tumor marker", "serum", "ng/mL", None, 4.0, (0.01, 900)),
    "S100 protein": ("tumor marker", "serum", "ug/L", None, 0.105, (0.02, 3)),
    "lactate dehydrogenase": ("chemistry", "serum", "U/L", 120, 250, (100, 1500)),
    "alkaline phosphatase": ("chemistry", "serum", "U/L", 40, 150, (30, 900)),
    "creatinine": ("chemistry", "serum", "umol/L", 45, 110, (40, 300)),
    "alanine aminotransferase": ("chemistry", "serum", "U/L", 7, 40, (5, 600)),
    "thyroid-stimulating hormone": ("chemistry", "serum", "mIU/L", 0.4, 4.0, (0.01, 60)),
    "hemoglobin": ("hematology", "blood", "g/dL", 12, 16, (6, 17)),
    "absolute neutrophil count": ("hematology", "blood", "10^9/L", 2.0, 7.5, (0.1, 15)),
    "platelet count": ("hematology", "blood", "10^9/L", 150, 400, (10, 700)),
}

AE_TERMS: list[tuple[str, list[str], bool]] = [  # (CTCAE term, treatments, immune-related)
    ("infusion related reaction", ["methylprednisolone", "diphenhydramine"], False), ("pneumonitis", ["prednisolone"], True),
    ("diarrhea", ["loperamide"], False), ("colitis", ["methylprednisolone", "infliximab"], True),
    ("neutrophil count decreased", ["filgrastim"], False), ("febrile neutropenia", ["piperacillin-tazobactam", "filgrastim"], False),
    ("anemia", [], False), ("platelet count decreased", [], False), ("fatigue", [], False), ("nausea", ["ondansetron"], False),
    ("vomiting", ["ondansetron"], False), ("rash maculo-papular", ["prednisolone"], True), ("hypothyroidism", ["levothyroxine"], True),
    ("hepatitis", ["methylprednisolone"], True), ("alanine aminotransferase increased", [], False),
    ("peripheral sensory neuropathy", [], False), ("hypertension", ["amlodipine"], False), ("proteinuria", [], False),
    ("palmar-plantar erythrodysesthesia syndrome", [], False), ("mucositis oral", [], False), ("anorexia", [], False),
    ("myocarditis", ["methylprednisolone"], True), ("lung infection", ["piperacillin-tazobactam"], False),
    ("pulmonary embolism", ["enoxaparin"], False), ("tracheoesophageal fistula", [], False),
]

_SUPPORTIVE_NAMES = {s[0] for s in SUPPORTIVE}
# how reports word the variant type (the wordings CDISC GFTESTCD's source texts recognise)
_VARIANT_TYPE_TEXT = {"missense": "single nucleotide variant", "nonsense": "point mutation", "splice site": "point mutation",
                      "deletion": "indel", "insertion": "indel", "frameshift": "short variant"}
_AE_TREATMENTS = {term: treatments for term, treatments, _ in AE_TERMS}

COMORBIDITIES = ["hypertension", "type 2 diabetes mellitus", "chronic obstructive pulmonary disease", "coronary artery disease",
                 "atrial fibrillation", "chronic kidney disease", "hypothyroidism", "hepatitis B virus infection",
                 "hyperlipidemia", "osteoarthritis", "severe restrictive ventilation disorder", "gastroesophageal reflux disease"]
SYMPTOMS = ["cough", "hemoptysis", "dyspnea", "weight loss", "chest pain", "abdominal pain", "fatigue", "palpable breast mass",
            "rectal bleeding", "bone pain", "headache", "dysphagia", "back pain", "hematuria"]
PRIOR_CANCERS = ["lung adenocarcinoma", "papillary thyroid carcinoma", "basal cell carcinoma of the skin",
                 "ductal carcinoma in situ of the breast", "prostate adenocarcinoma", "bladder urothelial carcinoma"]
IMAGING = ["computed tomography", "positron emission tomography-computed tomography", "magnetic resonance imaging",
           "bone scintigraphy", "ultrasonography"]
BIOPSIES = ["fiber bronchoscopy biopsy", "CT-guided percutaneous needle biopsy", "endoscopic biopsy", "core needle biopsy",
            "endobronchial ultrasound-guided transbronchial needle aspiration", "excisional biopsy"]
SURGERIES = {"lung": "lobectomy", "breast": "modified radical mastectomy", "sigmoid colon": "sigmoid colectomy",
             "stomach": "distal gastrectomy", "skin of the back": "wide local excision", "ovary": "cytoreductive surgery",
             "left kidney": "radical nephrectomy", "prostate": "radical prostatectomy"}
COUNTRIES = ["China", "Japan", "United States", "Germany", "France", "Italy", "Republic of Korea", "Spain", "India", "Brazil",
             "United Kingdom", "Canada"]
JOURNALS = ["Oncology Letters", "Frontiers in Oncology", "BMC Cancer", "Journal of Medical Case Reports", "Thoracic Cancer",
            "Cancer Reports", "Case Reports in Oncology", "Molecular and Clinical Oncology", "Medicine (Baltimore)"]
RESPONSES_RECIST = ["complete response", "partial response", "stable disease", "progressive disease"]
RESPONSES_OTHER = ["PR", "SD", "PD", "iUPD", "iSD", "marked shrinkage of the primary tumour", "mixed response"]
SMOKING = ["never smoker", "former smoker", "current smoker", "significant smoking history"]
NOTES = ["Printed as reported; no further detail given.", "Value read from the text, not from a figure.",
         "The report does not state the exact date.", "Transcriber's remark: wording kept as printed.",
         "Described in the discussion section only.", "Dose as printed; body surface area not reported."]
UNKNOWN = {  # terms no terminology table is expected to know: they take the uncoded path
    "drug": ["Kanglaite injection", "Shenqi Fuzheng injection", "investigational agent XZ-1024", "traditional Chinese herbal decoction"],
    "marker": ["CD99-like antigen", "SOX11 variant stain", "unspecified neuroendocrine panel"],
    "ae": ["general malaise and low mood", "odd taste in the mouth", "moderate dyspnea during the infusion"],
    "condition": ["benign essential tremor", "old pulmonary tuberculosis scar", "gouty arthritis of the left toe"],
    "lab": ["free light chain ratio (local assay)", "tumour M2-pyruvate kinase"],
    "gene": ["FAM135B", "LRP1B"],
}

# The terminology tables (mappings/terminology/<name>.csv) each vocabulary category draws from; when none of a
# category's tables exists, tables whose file name contains one of TABLE_KEYWORDS are used instead.
TABLE_NAMES: dict[str, tuple[str, ...]] = {
    "drug": ("drugs",), "marker": ("tumor-markers", "tumor-markers-quantitative"), "gene": ("genes",), "lab": ("labs",),
    "ae": ("meddra-ctcae",), "condition": ("conditions",), "site": ("body-sites",), "met_site": ("secondary-cancer-sites",),
    "procedure": ("procedures",), "specimen": ("specimen-types",), "route": ("routes",), "unit": ("ucum",),
}
TABLE_KEYWORDS: dict[str, tuple[str, ...]] = {
    "drug": ("drug", "medication", "rxnorm", "agent", "substance", "atc"),
    "marker": ("ihc", "marker", "patholog", "stain"),
    "gene": ("gene", "hgnc"),
    "lab": ("lab", "loinc"),
    "ae": ("adverse", "meddra", "ctcae", "toxicit"),
    "condition": ("condition", "diagnos", "disease", "histolog", "morpholog", "icd", "comorbid", "problem"),
    "site": ("site", "anatom", "topograph", "body"),
    "procedure": ("procedure", "surgery", "imaging"),
}


# --------------------------------------------------------------------------------------------------------
# Vocabulary from the terminology tables
# --------------------------------------------------------------------------------------------------------

@dataclass(slots=True)
class Vocabulary:
    """Terms per category: the tables' texts (if any), plus synonyms for known texts."""

    tables: dict[str, list[str]] = field(default_factory=dict)     # category → table texts
    synonyms: dict[str, list[str]] = field(default_factory=dict)   # normalized text → its synonyms
    source: str = "builtin"

    def pick(self, rng: random.Random, category: str, builtin: list[str], p_table: float = 0.35) -> str:
        """A term: from the tables with probability ``p_table`` (when they have that category), else built in."""
        pool = self.tables.get(category)
        if pool and rng.random() < p_table:
            return rng.choice(pool)
        return rng.choice(builtin)

    def variant(self, rng: random.Random, text: str, p: float = 0.15) -> str:
        """Sometimes print a known term by one of its table synonyms (exercises synonym matching)."""
        syn = self.synonyms.get(_norm(text))
        if syn and rng.random() < p:
            return rng.choice(syn)
        return text


def _norm(text: str) -> str:
    return " ".join(str(text).split()).casefold()


def _terminology_folder() -> Path | None:
    try:
        from converter.resources import mappings_dir

        folder = mappings_dir() / "terminology"
    except Exception:  # noqa: BLE001 - the generator also works without the package
        folder = ROOT / "mappings" / "terminology"
    return folder if folder.is_dir() else None


@lru_cache(maxsize=4)
def load_vocabulary(folder: str | None = None, use_tables: bool = True) -> Vocabulary:
    """Read term texts and synonyms from ``terminology/*.csv`` (not the CDISC CT codelists)."""
    vocab = Vocabulary()
    path = Path(folder) if folder else _terminology_folder()
    if not use_tables or path is None:
        return vocab
    used = []
    tables = sorted(path.glob("*.csv"))
    stems = {t.stem.lower() for t in tables}
    for table in tables:
        stem = table.stem.lower()
        categories = [c for c, names in TABLE_NAMES.items() if stem in names]
        categories += [c for c, keys in TABLE_KEYWORDS.items()
                       if not stems & set(TABLE_NAMES.get(c, ())) and any(k in stem for k in keys)]
        try:
            with table.open(newline="", encoding="utf-8") as fh:
                rows = list(csv.DictReader(fh))
        except (OSError, UnicodeDecodeError, csv.Error):
            continue
        texts: list[str] = []
        for row in rows:
            text = (row.get("text") or "").strip()
            if not text or len(text) > 80:
                continue
            texts.append(text)
            syn = [s.strip() for s in (row.get("synonyms") or "").split("|")
                   if s.strip() and len(s.strip()) <= 80]
            if syn:
                vocab.synonyms.setdefault(_norm(text), [])
                vocab.synonyms[_norm(text)] += [s for s in syn if s not in vocab.synonyms[_norm(text)]]
        texts = sorted(set(texts))
        if texts:
            used.append(table.name)
        for c in categories:
            vocab.tables.setdefault(c, [])
            vocab.tables[c] = sorted(set(vocab.tables[c]) | set(texts))
    if used:
        vocab.source = (f"{path} ({len(used)} tables; terms for {', '.join(sorted(vocab.tables))}; "
                        f"synonyms of {len(vocab.synonyms)} terms) + built-in")
    return vocab


# --------------------------------------------------------------------------------------------------------
# One case
# --------------------------------------------------------------------------------------------------------

_ORDINALS = ["first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth", "tenth"]


def typo(rng: random.Random, word: str) -> str:
    """A plausible misspelling (swap, drop, double or change a letter), as printed reports have them."""
    letters = [i for i, ch in enumerate(word) if ch.isalpha()]
    if len(letters) < 4:
        return word + word[-1]
    i = rng.choice(letters[1:-1])
    op = rng.randrange(4)
    if op == 0 and i + 1 < len(word):
        out = word[:i] + word[i + 1] + word[i] + word[i + 2:]
    elif op == 1:
        out = word[:i] + word[i + 1:]
    elif op == 2:
        out = word[:i] + word[i] + word[i:]
    else:
        vowels = "aeiou"
        repl = rng.choice([v for v in vowels if v != word[i].lower()]) if word[i].lower() in vowels else "e"
        out = word[:i] + repl + word[i + 1:]
    return out if out != word else word + "s"


class _Case:
    """Builds one case: ids, a timeline in days, and the precision its dates are printed with."""

    def __init__(self, rng: random.Random, vocab: Vocabulary, case_id: str):
        self.rng = rng
        self.vocab = vocab
        self.case_id = case_id
        self.used: set[str] = set()
        self.origin = dt.date(2008, 1, 1) + dt.timedelta(days=rng.randrange(0, 15 * 365))
        r = rng.random()
        self.precision = "month" if r < 0.55 else ("day" if r < 0.92 else "year")
        self.p_relative = rng.choice([0.0, 0.05, 0.1, 0.25])  # share of timings printed relative
        self.p_weird = 0.03                                      # share of misspelt / unknown terms

    # ids -------------------------------------------------------------------------------------------
    def id(self, stem: str) -> str:
        stem = re.sub(r"[^A-Za-z0-9._-]+", "-", stem.lower()).strip("-._")[:48] or "x"
        cand, n = stem, 1
        while cand in self.used:
            n += 1
            cand = f"{stem}-{n}"
        self.used.add(cand)
        return cand

    # dates -----------------------------------------------------------------------------------------
    def iso(self, day: int, precision: str | None = None) -> str:
        d = self.origin + dt.timedelta(days=day)
        p = precision or self.precision
        if p == "year":
            return f"{d.year:04d}"
        if p == "month":
            return f"{d.year:04d}-{d.month:02d}"
        return d.isoformat()

    def when(self, day: int, anchor: tuple[str, int] | None = None, label: str = "", allow_relative: bool = True) -> Any:
        """A date: usually ISO at the case precision; sometimes relative to an anchor (entity id, its day)."""
        rng = self.rng
        if anchor and allow_relative and rng.random() < self.p_relative:
            anchor_id, anchor_day = anchor
            delta = day - anchor_day
            direction = "after" if delta >= 0 else "before"
            months = round(abs(delta) / 30.4)
            if months >= 1:
                off = {"value": months, "unit": "months"}
                text = f"{months} month{'s' if months != 1 else ''} {direction} {label or 'the anchor event'}"
            else:
                weeks = max(1, round(abs(delta) / 7))
                off = {"value": weeks, "unit": "weeks"}
                text = f"{weeks} week{'s' if weeks != 1 else ''} {direction} {label or 'the anchor event'}"
            out: dict[str, Any] = {"text": text, "anchor": anchor_id, "offset": off, "direction": direction}
            if rng.random() < 0.3:
                out["date"] = self.iso(day)
            if rng.random() < 0.2:
                out["approximate"] = True
            return out
        return self.iso(day)

    def note(self, item: dict[str, Any], p: float = 0.12) -> dict[str, Any]:
        """Sometimes a transcriber's note, as the seed has on many entities."""
        if "note" not in item and self.rng.random() < p:
            item["note"] = self.rng.choice(NOTES)
        return item

    # terms -----------------------------------------------------------------------------------------
    def term(self, category: str, builtin: list[str], known: str | None = None) -> str:
        """A coded term: the given or a picked one, sometimes a table synonym, a typo or an unknown term."""
        rng = self.rng
        text = known if known is not None else self.vocab.pick(rng, category, builtin)
        r = rng.random()
        if r < self.p_weird / 2 and category in UNKNOWN:
            return rng.choice(UNKNOWN[category])
        if r < self.p_weird:
            return typo(rng, text)
        return self.vocab.variant(rng, text)


def _drug_entry(name: str, rng: random.Random) -> tuple[float, str, str, list[int] | None, int, int]:
    if name in DRUGS:
        return DRUGS[name]
    oral = rng.random() < 0.4
    return (rng.choice([10, 50, 100, 200, 250, 500]), "mg", "oral" if oral else "intravenous",
            None if oral else [1], rng.choice([3, 4]), 1)


def make_case(index: int, seed: int = 0, vocab: Vocabulary | None = None) -> dict[str, Any]:
    """The ``index``-th synthetic case of ``seed`` (deterministic: same inputs, same case)."""
    rng = random.Random(f"casebridge-gen:{seed}:{index}")
    vocab = vocab if vocab is not None else load_vocabulary()
    case_id = f"syn-{seed}-{index:07d}"
    c = _Case(rng, vocab, case_id)
    tumour = rng.choice(TUMOURS)
    sex = tumour["sex"] or rng.choice(["male", "female"])
    doc: dict[str, Any] = {"case_id": case_id}

    # source ---------------------------------------------------------------------------------------
    year = c.origin.year + rng.randint(2, 5)
    journal = rng.choice(JOURNALS)
    doc["source"] = {
        "title": f"Synthetic case {index} of seed {seed}: {tumour['name']} treated with {' plus '.join(rng.choice(tumour['regimens']))}",
        "journal": journal, "year": min(year, 2100), "volume": str(rng.randint(1, 60)), "pages": str(rng.randint(1, 400)),
        "doi": f"10.5555/casebridge.syn.{seed}.{index}",
        "note": "Synthetic case generated by benchmarks/gen.py for benchmarking and tests; not a real patient.",
    }
    if rng.random() < 0.5:
        doc["source"]["authors"] = [f"Author {chr(65 + k)}" for k in range(rng.randint(1, 6))]

    # timeline: day 0 = diagnosis --------------------------------------------------------------------
    dx_day = rng.randint(30, 400)
    dx_id = c.id("dx-" + tumour["histology"].split()[0])
    dx_anchor = (dx_id, dx_day)

    # patient --------------------------------------------------------------------------------------
    age = rng.randint(28, 86)
    patient: dict[str, Any] = {"id": c.id("patient"), "age": {"value": age, "unit": "years", "at": "diagnosis"}, "sex": sex}
    if rng.random() < 0.03:
        patient["sex"] = {"text": "not reported", "note": "The report does not state sex."}
    patient["country"] = rng.choice(COUNTRIES)
    patient["race"] = "not reported"
    patient["ethnicity"] = "not reported"
    if rng.random() < 0.8:
        smoking: dict[str, Any] = {"status": rng.choice(SMOKING)}
        if smoking["status"] != "never smoker" and rng.random() < 0.5:
            smoking["pack_years"] = rng.choice([10, 20, 30, 40, 45, 60])
        patient["smoking"] = smoking
    if rng.random() < 0.7:
        patient["performance_status"] = [
            {"id": c.id(f"ps-{k + 1}"), "scale": "ECOG", "value": rng.randint(0, 2), "date": c.iso(dx_day + 60 * k)}
            for k in range(rng.randint(1, 3))]
    doc["patient"] = patient

    # medical history ------------------------------------------------------------------------------
    mh: list[dict[str, Any]] = []
    for s in rng.sample(SYMPTOMS, rng.randint(0, 3)):
        mh.append({"id": c.id("mh-" + s), "condition": c.term("condition", SYMPTOMS, s), "category": "presenting symptom",
                   "onset": c.when(dx_day - rng.randint(7, 120), dx_anchor, "diagnosis")})
    for s in rng.sample(COMORBIDITIES, rng.randint(0, 3)):
        item: dict[str, Any] = {"id": c.id("mh-" + s), "condition": c.term("condition", COMORBIDITIES, s), "category": "comorbidity",
                                "ongoing": True}
        if rng.random() < 0.5:
            item["onset"] = c.iso(dx_day - rng.randint(365, 365 * 15), "year")
        mh.append(item)
    if rng.random() < 0.15:
        years = rng.randint(2, 20)
        prior = rng.choice(PRIOR_CANCERS)
        rel = {"text": f"{years} years prior", "anchor": dx_id, "offset": {"value": years, "unit": "years"}, "direction": "before"}
        mh.append({"id": c.id("mh-prior-cancer"), "condition": prior, "category": "prior cancer", "onset": dict(rel), "ongoing": False,
                   "treatments": [{"id": c.id("tx-prior-surgery"), "type": "surgery", "text": f"resection of {prior}", "date": dict(rel)}]})
    if mh:
        doc["medical_history"] = mh

    # procedures and specimens ---------------------------------------------------------------------
    procedures: list[dict[str, Any]] = []
    img_day = dx_day - rng.randint(3, 25)
    procedures.append({"id": c.id("pr-imaging-baseline"), "procedure": rng.choice(IMAGING), "category": "imaging",
                       "date": c.iso(img_day), "body_site": rng.choice(["chest", "chest and abdomen", "whole body", tumour["site"]])})
    biopsy = rng.choice(BIOPSIES)
    bx_id = c.id("pr-biopsy")
    bx_day = dx_day - rng.randint(0, 7)
    procedures.append({"id": bx_id, "procedure": c.term("procedure", BIOPSIES, biopsy), "category": "biopsy", "date": c.iso(bx_day),
                       "body_site": tumour["site"]})
    surgery_id = None
    if rng.random() < 0.3:
        surgery_id = c.id("pr-surgery")
        procedures.append({"id": surgery_id, "procedure": SURGERIES[tumour["site"]] if tumour["site"] in SURGERIES else "resection",
                           "category": "surgery", "date": c.iso(dx_day + rng.randint(14, 45)), "body_site": tumour["site"],
                           "outcome": rng.choice(["R0 resection", "R1 resection", "uneventful"])})
    doc["procedures"] = procedures
    sp_id = c.id("sp-biopsy")
    specimens = [{"id": sp_id, "type": "tumor tissue", "collection_method": biopsy, "collected_by": bx_id,
                  "body_site": tumour["site"], "date": c.iso(bx_day)}]
    if surgery_id:
        specimens.append({"id": c.id("sp-surgical"), "type": "surgical resection specimen", "collected_by": surgery_id,
                          "body_site": tumour["site"]})
    doc["specimens"] = specimens

    # diagnosis ------------------------------------------------------------------------------------
    dx: dict[str, Any] = {"id": dx_id, "name": c.term("condition", [tumour["name"]], tumour["name"]),
                          "histology": tumour["histology"], "primary_site": tumour["site"], "date": c.iso(dx_day),
                          "basis": "histology and immunohistochemistry of the biopsy", "specimen": sp_id}
    if rng.random() < 0.08:
        dx["laterality"] = rng.choice(["left", "right"])
    if tumour["staging"] == "FIGO":
        stage = {"id": c.id("stg-initial"), "system": "FIGO", "edition": tumour["edition"], "type": "pathological",
                 "stage_group": rng.choice(["IIIB", "IIIC", "IVA", "IVB"]), "date": c.iso(dx_day)}
    else:
        t, n, m = rng.choice(["T1b", "T1c", "T2a", "T2b", "T3", "T4"]), rng.choice(["N0", "N1", "N2", "N3"]), rng.choice(["M0", "M0", "M1a", "M1b", "M1c"])
        group = "IV" + ("A" if m in ("M1a", "M1b") else "B") if m != "M0" else rng.choice(["IIA", "IIB", "IIIA", "IIIB", "IIIC"])
        stage = {"id": c.id("stg-initial"), "system": "AJCC", "edition": tumour["edition"], "type": "clinical",
                 "t": t, "n": n, "m": m, "stage_group": group, "date": c.iso(dx_day)}
    dx["staging"] = [stage]
    if rng.random() < 0.7:
        longest = round(rng.uniform(8, 90), 1)
        dx["tumor_size"] = [{"id": c.id("ts-baseline"), "longest": longest, "other": round(longest * rng.uniform(0.4, 0.95), 1),
                             "unit": "mm", "method": "computed tomography", "date": c.iso(img_day)}]
    met_sites = [vocab.pick(rng, "met_site", [s], 0.25) for s in rng.sample(tumour["mets"], rng.randint(0, min(3, len(tumour["mets"]))))]
    mets = [{"id": c.id("met-" + s), "site": c.term("site", [s], s), "date": c.iso(dx_day), "detected_by": "computed tomography"}
            for s in dict.fromkeys(met_sites)]
    if mets:
        dx["metastases"] = mets
    doc["diagnoses"] = [dx]

    # pathology (IHC) ------------------------------------------------------------------------------
    pathology: list[dict[str, Any]] = []
    markers = rng.sample(tumour["markers"], rng.randint(len(tumour["markers"]) // 2, len(tumour["markers"])))
    extra = [m for m in vocab.tables.get("marker", []) if m not in markers]
    if extra and rng.random() < 0.3:
        markers.append(rng.choice(extra))
    for marker in markers:
        text = c.term("marker", tumour["markers"], marker)
        item = {"id": c.id("ihc-" + marker), "specimen": sp_id, "method": "IHC", "marker": text,
                "result": rng.choice(["+", "-", "positive", "negative", "focal positive", "weakly positive"]), "date": c.iso(bx_day)}
        if marker in ("Ki-67",):
            pct = rng.choice([5, 10, 20, 30, 40, 60, 80, 90])
            item["result"] = "+"
            item["value"] = {"value": pct, "unit": "%"}
            item["scoring"] = {"system": "percent positive", "value": pct, "unit": "%"}
        elif marker == "PD-L1":
            pct = rng.choice([0, 1, 2, 5, 10, 30, 50, 80])
            item["result"] = "negative" if pct < 1 else "positive"
            item["value"] = {"value": pct, "unit": "%"}
            item["scoring"] = {"system": rng.choice(["TPS", "TPS", "CPS"]), "value": pct, "unit": "%"} if pct <= 100 else {"system": "other", "text": str(pct)}
            if item["scoring"]["system"] == "CPS":
                item["scoring"].pop("unit")
        elif marker in ("estrogen receptor", "progesterone receptor", "ER", "AR"):
            pct = rng.choice([0, 5, 20, 40, 70, 90, 95])
            item["result"] = "negative" if pct < 1 else "positive"
            item["value"] = {"value": pct, "unit": "%"}
            if rng.random() < 0.5:
                item["scoring"] = {"system": "H-score", "value": min(300, pct * rng.randint(1, 3))}
        elif marker == "HER2":
            score = rng.randint(0, 3)
            item["result"] = {0: "0", 1: "1+", 2: "2+ (equivocal)", 3: "3+ (positive)"}[score]
            item["scoring"] = {"system": "intensity", "value": score, "text": f"{score}+" if score else "0"}
        pathology.append(c.note(item))
    pathology.append({"id": c.id("he-morphology"), "specimen": sp_id, "method": "H&E", "marker": "hematoxylin and eosin morphology",
                      "result": tumour["histology"], "date": c.iso(bx_day)})
    doc["pathology"] = pathology

    # genomics -------------------------------------------------------------------------------------
    tests: list[dict[str, Any]] = []
    for g in range(rng.choices([0, 1, 2], [0.15, 0.7, 0.15])[0]):
        genes = list(tumour["genes"])
        n_tested = rng.choice([50, 139, 324, 425, 520]) if rng.random() < 0.8 else len(genes)
        test: dict[str, Any] = {"id": c.id(f"ngs-{g + 1}"), "specimen": sp_id, "date": c.iso(bx_day + 14 + 200 * g),
                                "panel": f"next-generation sequencing panel of {n_tested} cancer-relevant genes",
                                "method": "next-generation sequencing", "genes_tested_count": max(n_tested, len(genes))}
        if rng.random() < 0.6:
            test["depth"] = {"tumor": rng.choice([500, 1000, 1500]), "normal": rng.choice([100, 300]), "unit": "x"}
        n_var = min(rng.choice([0, 1, 1, 2, 2, 3, 3, 4, 6, 8]), len(genes))
        variants = []
        mutated = rng.sample(genes, n_var)
        for gene in mutated:
            options = VARIANTS.get(gene) or [(f"c.{rng.randint(100, 4000)}{rng.choice('ACGT')}>{rng.choice('ACGT')}", None, "missense")]
            hc, hp, vt = rng.choice(options)
            v: dict[str, Any] = {"id": c.id(f"var-{gene}"), "gene": c.term("gene", tumour["genes"], gene), "hgvs_c": hc,
                                 "vaf": {"value": round(rng.uniform(1, 80), 1), "unit": "%"}, "origin": rng.choice(["somatic"] * 5 + ["germline", "unknown"])}
            if hp:
                v["hgvs_p"] = hp
            if rng.random() < 0.5:
                v["type"] = _VARIANT_TYPE_TEXT.get(vt, "short variant")
            if rng.random() < 0.4:
                v["interpretation"] = rng.choice(["pathogenic", "likely pathogenic", "variant of uncertain significance"])
            variants.append(c.note(v))
        if variants:
            test["variants"] = variants
        rest = sorted(set(genes + PANEL_GENES + vocab.tables.get("gene", [])) - set(mutated))
        negs = [{"id": c.id(f"neg-{gn}"), "gene": gn, "alterations": rng.choice([["mutation", "fusion"], ["mutation"], ["any"], ["amplification"]])}
                for gn in rng.sample(rest, rng.randint(0, min(12, len(rest))))]
        if negs:
            test["negatives"] = negs
        if rng.random() < 0.5:
            test["biomarkers"] = [{"id": c.id("bm-tmb"), "name": "tumor mutational burden",
                                   "value": {"value": round(rng.uniform(0.5, 40), 1), "unit": "mutations/Mb"}}]
            if rng.random() < 0.5:
                test["biomarkers"].append({"id": c.id("bm-msi"), "name": "microsatellite instability",
                                           "result": rng.choice(["MSS", "MSI-H", "MSI-L"])})
        tests.append(test)
    if tests:
        doc["genomic_tests"] = tests

    # therapy lines, assessments, AEs --------------------------------------------------------------
    lines: list[dict[str, Any]] = []
    assessments: list[dict[str, Any]] = []
    aes: list[dict[str, Any]] = []
    n_lines = rng.choices([1, 2, 3, 4, 5, 6, 7], [0.08, 0.12, 0.15, 0.17, 0.18, 0.16, 0.14])[0]
    day = dx_day + rng.randint(7, 40) + (45 if surgery_id else 0)
    base_id = c.id("ra-baseline")
    assessments.append({"id": base_id, "date": c.iso(day - rng.randint(1, 10)), "method": "computed tomography",
                        "response": "baseline", "compared_to": "none"})
    regimens = list(tumour["regimens"])
    prev_start = day
    rng.shuffle(regimens)
    for k in range(n_lines):
        number = k + 1
        line_id = c.id(f"line-{number}")
        drugs = list(regimens[k % len(regimens)])
        table_drugs = [d for d in vocab.tables.get("drug", []) if d not in _SUPPORTIVE_NAMES]
        if table_drugs and rng.random() < 0.12:
            drugs[rng.randrange(len(drugs))] = rng.choice(table_drugs)
        entries = [_drug_entry(d, rng) for d in drugs]
        cycle_weeks = max(e[4] for e in entries)
        cycles = rng.randint(2, 10)
        start, end = day, day + cycles * cycle_weeks * 7
        line: dict[str, Any] = {"id": line_id, "number": number}
        if rng.random() < 0.5:
            line["regimen"] = " + ".join(drugs)
        if rng.random() < 0.3:
            line["intent"] = rng.choice(["palliative", "curative", "adjuvant"])
        prev_line = (lines[-1]["id"], prev_start) if lines else None
        line["start"] = c.when(start, prev_line or dx_anchor, f"line {number - 1}" if prev_line else "diagnosis")
        agents: list[dict[str, Any]] = []
        for drug, (dose, unit, route, days, weeks, tpd) in zip(drugs, entries):
            aid = c.id(f"l{number}-{drug}")
            agent: dict[str, Any] = {"id": aid, "drug": c.term("drug", list(DRUGS), drug), "role": "anticancer",
                                     "dose": {"value": dose, "unit": unit}, "route": route}
            sched: dict[str, Any] = {"cycle_length": {"value": weeks, "unit": "weeks"}}
            if days:
                sched["days"] = days
                sched["text"] = f"days {days[0]}-{days[-1]} every {weeks} weeks" if len(days) > 1 else f"every {weeks} weeks"
            else:
                sched = {"text": "daily" if tpd == 1 else "twice daily"}
            if tpd > 1:
                sched["times_per_day"] = tpd
            agent["schedule"] = sched
            if rng.random() < 0.4:
                agent["cycles"] = cycles
            if rng.random() < 0.5:
                agent["start"] = c.iso(start)
            if agent["drug"] != drug and rng.random() < 0.5:
                agent["note"] = f"Printed '{agent['drug']}' (sic: {drug})." if agent["drug"] not in sum(UNKNOWN.values(), []) else "Not a known drug name."
            agents.append(c.note(agent))
        line["agents"] = agents
        line["cycles"] = cycles
        # assessments of the line
        mid = start + (end - start) // 2
        is_last = k == n_lines - 1
        best = rng.choice(RESPONSES_RECIST[:3])
        ra_mid = c.id(f"ra-l{number}-mid")
        ra: dict[str, Any] = {"id": ra_mid, "date": c.when(mid, (line_id, start), f"the start of line {number}"),
                              "method": "computed tomography", "response": best if rng.random() > 0.1 else rng.choice(RESPONSES_OTHER),
                              "line": line_id}
        if rng.random() < 0.8:
            ra["criteria"] = "RECIST 1.1"
        if rng.random() < 0.3:
            ra["target_lesions"] = [{"id": c.id(f"tl-l{number}-{j + 1}"), "site": rng.choice(tumour["mets"] + [tumour["site"]]),
                                     "longest": round(rng.uniform(5, 80), 1), "unit": "mm"} for j in range(rng.randint(1, 3))]
        assessments.append(c.note(ra))
        line["best_response"] = ra_mid
        if not is_last or rng.random() < 0.6:
            ra_end = c.id(f"ra-l{number}-end")
            pd = {"id": ra_end, "date": c.iso(end), "method": "computed tomography", "criteria": "RECIST 1.1",
                  "response": "progressive disease", "line": line_id}
            if rng.random() < 0.4:
                site = rng.choice(tumour["mets"])
                pd["new_lesions"] = [{"id": c.id(f"nl-l{number}"), "site": site}]
            assessments.append(pd)
            line["end"] = c.iso(end)
            line["end_reason"] = "progressive disease"
        else:
            line["end"] = {"text": f"ongoing at the last report, after cycle {cycles}", "anchor": ra_mid, "direction": "after"}
        # adverse events during the line
        for _ in range(rng.choices([0, 1, 2, 3], [0.4, 0.32, 0.18, 0.1])[0]):
            term = vocab.pick(rng, "ae", [t[0] for t in AE_TERMS], 0.35)
            treatments = _AE_TREATMENTS.get(term, [])
            onset_day = start + rng.randint(5, max(6, end - start))
            ae_id = c.id("ae-" + term)
            ae: dict[str, Any] = {"id": ae_id, "term": c.term("ae", [], term)}
            grade = rng.choices([1, 2, 3, 4, 5], [0.3, 0.35, 0.25, 0.07, 0.03])[0]
            if rng.random() < 0.85:
                ae["grade"] = grade
                ae["ctcae_version"] = "5.0"
            cycle = max(1, min(cycles, 1 + (onset_day - start) // (cycle_weeks * 7)))
            if rng.random() < 0.3:
                ae["onset"] = {"text": f"during the {_ORDINALS[cycle - 1] if cycle <= 10 else str(cycle) + 'th'} treatment cycle",
                               "anchor": line_id, "cycle": cycle}
            else:
                ae["onset"] = c.iso(onset_day)
                if grade < 5 and rng.random() < 0.6:
                    ae["end"] = c.iso(onset_day + rng.randint(3, 60))
            ae["serious"] = grade == 5 or (grade >= 3 and rng.random() < 0.7)
            if ae["serious"]:
                ae["seriousness_criteria"] = ["death"] if grade == 5 else [rng.choice(["hospitalization", "life-threatening", "other medically important"])]
            ae["suspected_agents"] = [rng.choice(agents)["id"]]
            if rng.random() < 0.5:
                ae["causality"] = rng.choice(["probably related", "possibly related", "related", "unlikely related"])
            if rng.random() < 0.5:
                ae["action_taken"] = rng.choice(["dose not changed", "dose reduced", "drug interrupted", "drug withdrawn"])
            tx = []
            for drug in treatments[: rng.randint(0, len(treatments))]:
                s = next(x for x in SUPPORTIVE if x[0] == drug)
                tx.append({"id": c.id(f"{ae_id}-{drug}"), "drug": c.term("drug", [x[0] for x in SUPPORTIVE], drug),
                           "dose": {"value": s[1], "unit": s[2]}, "route": s[3], "date": c.iso(onset_day)})
            if tx:
                ae["treatments"] = tx
            ae["outcome"] = "fatal" if grade == 5 else rng.choice(["recovered", "recovered", "recovering", "not recovered"])
            aes.append(c.note(ae, 0.3))
        lines.append(c.note(line, 0.3))
        prev_start = start
        day = end + rng.randint(7, 60)
    doc["therapy_lines"] = lines

    # radiotherapy ---------------------------------------------------------------------------------
    if rng.random() < 0.25:
        rt_start = dx_day + rng.randint(20, 400)
        fractions = rng.choice([1, 5, 10, 15, 25, 30])
        doc["radiotherapy"] = [{"id": c.id("rt-1"), "modality": rng.choice(["external beam radiotherapy", "stereotactic body radiotherapy",
                                                                            "whole-brain radiotherapy"]),
                                "site": rng.choice(tumour["mets"]), "dose": {"value": rng.choice([8, 20, 30, 45, 50, 60]), "unit": "Gy"},
                                "fractions": fractions, "start": c.iso(rt_start), "end": c.iso(rt_start + fractions + fractions // 5 * 2),
                                "intent": rng.choice(["palliative", "curative"])}]

    # labs -----------------------------------------------------------------------------------------
    labs: list[dict[str, Any]] = []
    lab_names = list(tumour["labs"]) + rng.sample(sorted(LABS), 3) + rng.sample(vocab.tables.get("lab", []), min(1, len(vocab.tables.get("lab", []))))
    for j in range(rng.choices([0, 1, 2, 4, 6, 9, 12], [0.15, 0.15, 0.2, 0.2, 0.15, 0.1, 0.05])[0]):
        name = rng.choice(lab_names)
        text = c.term("lab", sorted(LABS), name) if name in LABS else name
        cat, spec, unit, low, high, (vmin, vmax) = LABS.get(name, ("other", "serum", "U/mL", None, 10, (1, 100)))
        lab: dict[str, Any] = {"id": c.id(f"lab-{name}-{j + 1}"), "test": text, "category": cat, "specimen_type": spec,
                               "date": c.when(dx_day + j * rng.randint(20, 90), dx_anchor, "diagnosis")}
        if rng.random() < 0.85:
            lab["value"] = {"value": round(rng.uniform(vmin, vmax), 2), "unit": unit}
            rr: dict[str, Any] = {"high": high, "unit": unit}
            if low is not None:
                rr["low"] = low
            lab["reference_range"] = rr
        else:
            lab["result"] = rng.choice(["elevated", "within normal limits", "decreased"])
        labs.append(lab)
    if labs:
        doc["labs"] = labs

    if assessments:
        doc["response_assessments"] = assessments
    if aes:
        doc["adverse_events"] = aes

    # outcome --------------------------------------------------------------------------------------
    last = max(day, dx_day + 30)
    if any(a.get("outcome") == "fatal" for a in aes):
        status = "dead"
    else:
        status = rng.choices(["alive", "dead", "unknown"], [0.45, 0.45, 0.1])[0]
    outcome: dict[str, Any] = {"status": status}
    if status == "dead":
        outcome["date"] = c.iso(last + rng.randint(0, 90))
        causes = [a for a in aes if a.get("outcome") == "fatal"]
        cod_text = causes[0]["term"] if causes else rng.choice(["disease progression", "respiratory failure", "multiple organ failure"])
        outcome["causes_of_death"] = [{"id": c.id("cod-primary"), "cause": cod_text, "type": "primary"}]
        if rng.random() < 0.3:
            outcome["causes_of_death"].append({"id": c.id("cod-contributing"), "cause": "lung infection", "type": "contributing"})
    elif status == "alive":
        outcome["last_follow_up"] = c.iso(last + rng.randint(0, 200))
    doc["outcome"] = outcome
    if rng.random() < 0.2:
        doc["notes"] = [{"id": c.id("note-1"), "topic": "discussion", "text": "Synthetic narrative: the authors discuss the course and the literature."}]
    return doc


def generate(n: int, seed: int = 0, *, start: int = 0, vocabulary: Vocabulary | None = None,
             use_tables: bool = True) -> Iterator[dict[str, Any]]:
    """``n`` synthetic cases (dicts valid against the case schema), deterministic for ``seed``."""
    vocab = vocabulary if vocabulary is not None else load_vocabulary(None, use_tables)
    for i in range(start, start + n):
        yield make_case(i, seed, vocab)


# --------------------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------------------

def _dumps_json(doc: dict[str, Any], indent: bool) -> bytes:
    try:
        import orjson

        return orjson.dumps(doc, option=orjson.OPT_INDENT_2 if indent else 0)
    except ImportError:  # pragma: no cover - orjson is a dependency of the package
        import json

        return json.dumps(doc, indent=2 if indent else None, ensure_ascii=False).encode()


def write_cases(cases: Iterable[dict[str, Any]], out: str | Path, fmt: str = "json") -> list[Path]:
    """Write cases into folder ``out``: one file per case (json, yaml) or ``cases.ndjson``; returns the paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    if fmt == "ndjson":
        path = out / "cases.ndjson"
        with path.open("wb") as fh:
            for doc in cases:
                fh.write(_dumps_json(doc, False) + b"\n")
        return [path]
    if fmt == "yaml":
        from ruamel.yaml import YAML

        yaml = YAML(typ="safe", pure=True)
        yaml.default_flow_style = False
        yaml.sort_base_mapping_type_on_output = False  # keep key order
        for doc in cases:
            path = out / f"{doc['case_id']}.yaml"
            with path.open("w", encoding="utf-8") as fh:
                yaml.dump(doc, fh)
            paths.append(path)
        return paths
    if fmt != "json":
        raise ValueError(f"unknown format {fmt!r}; expected json, yaml or ndjson")
    for doc in cases:
        path = out / f"{doc['case_id']}.json"
        path.write_bytes(_dumps_json(doc, True) + b"\n")
        paths.append(path)
    return paths


def shape(doc: dict[str, Any]) -> dict[str, int]:
    """Counts of what a case carries (to compare generated cases with the seed)."""
    tests = doc.get("genomic_tests", [])
    return {
        "lines": len(doc.get("therapy_lines", [])),
        "agents": sum(len(line.get("agents", [])) for line in doc.get("therapy_lines", [])),
        "pathology": len(doc.get("pathology", [])),
        "variants": sum(len(t.get("variants", [])) for t in tests),
        "negatives": sum(len(t.get("negatives", [])) for t in tests),
        "labs": len(doc.get("labs", [])),
        "assessments": len(doc.get("response_assessments", [])),
        "adverse_events": len(doc.get("adverse_events", [])),
        "medical_history": len(doc.get("medical_history", [])),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Generate synthetic CaseBridge case reports (deterministic per seed).")
    parser.add_argument("--cases", type=int, default=100, help="how many cases (default 100)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--start", type=int, default=0, help="index of the first case (default 0)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--format", choices=("json", "yaml", "ndjson"), default="json")
    parser.add_argument("--builtin-vocabulary", action="store_true",
                        help="ignore mappings/terminology/*.csv and use only the built-in vocabulary")
    args = parser.parse_args(argv)
    if args.cases < 0:
        parser.error("--cases must be >= 0")
    paths = write_cases(generate(args.cases, args.seed, start=args.start, use_tables=not args.builtin_vocabulary),
                        args.out, args.format)
    vocab = load_vocabulary(None, not args.builtin_vocabulary)
    print(f"wrote {args.cases} case(s) to {len(paths)} file(s) in {args.out} (vocabulary: {vocab.source})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

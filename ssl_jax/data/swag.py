"""SWAG (Zellers et al. 2018), the multiple-choice task of BERT's section 4.4: the released
`swag/regular` CSVs (train.csv, val.csv; header `,video-id,fold-ind,startphrase,sent1,sent2,
gold-source,ending0,ending1,ending2,ending3,label`).

Each example: {"context": sent1, "options": [sent2 + " " + ending_k for k in 0..3],
"label": the right ending's index} (BERT's and HF's reading: sentence A is sent1, sentence B
the second sentence's start with one ending).

    load_swag("validation", path="swagaf/data")
"""
from __future__ import annotations

import csv
import os

FILES = {"train": "train.csv", "validation": "val.csv"}
ENDINGS = tuple(f"ending{k}" for k in range(4))
COLUMNS = ("sent1", "sent2", *ENDINGS, "label")


def load_swag(split: str, path: str | None) -> list[dict]:
    """One split's examples from the released CSV under `path` (a directory)."""
    if split not in FILES:
        raise ValueError(f"SWAG split {split!r}; expected one of {sorted(FILES)}")
    if not path:
        raise ValueError("finetune.dataset='swag/regular' reads the released CSVs: set "
                         "finetune.path to the directory holding train.csv and val.csv")
    file = os.path.join(path, FILES[split])
    if not os.path.isfile(file):
        raise FileNotFoundError(f"SWAG file {file!r} does not exist (finetune.path should hold "
                                f"{' and '.join(FILES.values())})")
    with open(file, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"SWAG file {file!r} lacks the columns {missing}")
        examples = []
        for n, row in enumerate(reader):
            label = int(row["label"])
            if not 0 <= label < len(ENDINGS):
                raise ValueError(f"SWAG file {file!r}, row {n + 1}: label {label}; expected "
                                 f"0 to {len(ENDINGS) - 1}")
            examples.append({"context": row["sent1"], "label": label,
                             "options": [f"{row['sent2']} {row[e]}" for e in ENDINGS]})
    if not examples:
        raise ValueError(f"SWAG file {file!r} has no examples")
    return examples

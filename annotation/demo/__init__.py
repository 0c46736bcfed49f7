"""Demo data written for Prefline and the code that loads it (`manage.py load_demo`).

`data/` holds the demo files in the import formats researchers use: prompts with
candidate responses from four fictional models (`candidates.jsonl`), TRL preference
pairs with prior labels (`preferences.jsonl`), held-out prompts (`heldout.jsonl`), the
models' quality ranking (`models.json`) and the project's guidelines
(`guidelines.md`). Every text was written for this project; none comes from a dataset.
"""

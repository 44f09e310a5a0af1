"""One thin CLI module per DVC stage: `python -m specdraft.stages.<stage>`.

Each module parses its arguments, builds the typed config of the params sections it
declares in dvc.yaml, calls library code, and writes its outputs atomically.
"""

"""Each augmentation op's own code, one module per op (one for the two policies, one for the two
batch-mixing ops), imported by name only when a recipe uses the op (augvit/augment/registry.py).

No module of the shared input path (augvit/augment/*.py) imports one of these, so evaluation
loads none of them, and `train@*` depends on them through its recipe file, which records a hash
of each used op's files (`stages/recipe.py`): an edit here retrains only the versions whose
recipe uses the op.
"""

"""listener: the recipe package, in rooms by concern. From the bottom up: common/ (errors, atomic writes,
configs); data/ (stages 0-1, the loader) and models/; training/ (stage 2) and evaluation/ (stages 3-4);
on top the entry points recipe.py (`python -m local.recipe <stage>`) and separate.py, and benchmarks/."""

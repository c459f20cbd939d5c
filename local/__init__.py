"""listener: the recipe package (data preparation, views, datasets, models, losses, training, evaluation)."""

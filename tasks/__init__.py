"""What runs inside one job: data, folds, cache, training. Never imports Ray."""

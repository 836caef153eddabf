"""``zoosel bench``: build a model zoo, fine-tune it on targets and measure the scorers."""

"""Applications over the pipeline: the demo, bench, cascade, inspect, and the train/convert jobs."""

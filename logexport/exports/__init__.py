"""Export pipeline: requests, worker, encoders, storage and delivery."""

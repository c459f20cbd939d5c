"""Stage 2: the Lightning training loop (`train`), exact resumption (`resumable`), the losses (`losses`)
and each run's provenance record (`provenance`)."""

"""Stages 0 and 1 and the loader: dataset formats (`prepare`, `scp`), the synthetic generators, the
`sources.csv` and view CSV contracts (`sources`, `view_csv`), view drawing (`views`) and `ViewDataset`."""

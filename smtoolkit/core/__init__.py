"""The pure core: ID rules, answer parsing, outcome classification, retry and pacing policy.

Nothing here opens a socket, sleeps, or imports pandas, tqdm or ipywidgets; time is passed
in. Everything is unit-tested in microseconds.
"""

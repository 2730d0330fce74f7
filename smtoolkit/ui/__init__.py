"""The front-ends over the library: the notebook panel (`panel`, with what it shows in `html`),
and the shared web page of it (`server` serves it, `page` builds it in each visitor's kernel,
`limits` caps how many are open, `audit` records what visitors do).

Front-ends import the library; nothing in the library imports `ui`. Importing this package
imports nothing heavy: `smtoolkit --help` reads `limits` from here.
"""

"""Deployment tooling: `python -m deploy.package` builds the Lambda functions' folders (what
`sam build` and `make package` run). Nothing in shared/, functions/ or local/ imports it."""

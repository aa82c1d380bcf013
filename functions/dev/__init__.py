"""What only local runs and tooling use: the local server (`serve`), the embedded Postgres (`localdb`), the
migration runner (`migrate`), the OpenAPI generator (`openapi`) and the demo page (`demo/`).

Deployed functions never import this package (`tests/functions/test_deploy.py` checks it); the one way in
from the core is `runtime.database()`'s local default, taken only when no database is configured (never in
production).
"""

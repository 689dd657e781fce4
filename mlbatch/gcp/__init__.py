"""Google Cloud plumbing, in one place: credentials (auth), client construction for the
gcp and test profiles (clients), the one error translator and retry predicate (errors), and
the one Compute operation waiter (operations).

`auth` and `errors` import nothing of mlbatch but `mlbatch.core.errors` (and Google's own
libraries, lazily): core's GCS bucket and the agent may use them. `clients` and `operations`
also read `mlbatch.core.settings`; nothing here imports a flow, a provider or the agent.
See docs/architecture.md, "Google Cloud plumbing".
"""

"""Google Cloud plumbing, in one place: client construction for the gcp and test profiles
(clients), the one error translator (errors), the one Compute operation waiter (operations) and
the network paths of a Shared VPC (network).

What core and the agent need of it (Application Default Credentials with the one message a
user gets without them, and the one retry predicate) is mlbatch.core.gcp_base: core imports
nothing outside core. See docs/architecture.md, "Google Cloud plumbing".
"""

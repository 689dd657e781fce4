"""The identities of the gcp profile: what each may do (plan), the commands that set them
up (setup) and the check that the runner cannot write releases (policy)."""

"""What both flows share: settings, versions, names, bucket, manifest, catalog, run records.

Nothing here knows a flow or a cloud provider.
"""

"""The OpenSearch cluster, where documents are written: connection settings (`config`), the
index mapping's vector fields (`mapping`), index preparation and bulk-time settings (`index`),
the `_bulk` client (`bulk_client`) and what is retried, split or dead-lettered (`bulk_retry`).
"""

"""Batch prediction: ML Commons connector JSON (`connector`), `${...}` templating (`templating`),
derived status and cancel actions (`batch_actions`), the HTTP / SigV4 call (`remote_call`),
service status to task state (`job_status`), and the launcher that submits, polls and cancels
jobs as BATCH_PREDICTION tasks (`launcher`); ready-made connectors in `blueprints/`.
"""

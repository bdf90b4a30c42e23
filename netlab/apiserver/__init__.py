"""The lab API server: the Kubernetes API's shapes over the lab's store.

One module per concern: `app` (the application and its routes), `reads` (lists, gets,
watches), `writes` (create, update, patch, scale, delete: one validation path), `logs`,
`streams` (exec), `tables` (server-side printing), `openapi`, `patch`, `protobuf`,
`auth` (TLS endpoint, certificates, token) and `runner` (the sites and the thread they
run on). It knows the lab only through `base.Actions`.
"""

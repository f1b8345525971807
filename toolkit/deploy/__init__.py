"""Federations of node images on testbeds: the pure plan (`plan`), the direct deployer with its fork
launcher (`direct`, `launcher`, `dense`), and a live deployment's status and lifecycle
(`deployment`). See docs/deploy.md.

The package re-exports nothing: import from the module (`toolkit.deploy.direct.deploy`,
`toolkit.deploy.deployment.Deployment`), so that the launcher process, which imports only what it
needs before forking, does not load the rest."""

"""Model packages: the card (the contract with training), finding packages on disk, verifying
them, and loading them into optimised, warmed, self-tested modules. Nothing here knows about
requests or batching."""

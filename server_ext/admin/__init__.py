"""Operations for owners and admins, shared by the CLI and the ad-hoc commands, and the admin
socket that carries them to the running server."""

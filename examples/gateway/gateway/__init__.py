"""An API gateway's own data on flowstore: routes per organization, and regions."""

"""Robot drivers, the safety layer and the deployment daemon."""

"""Where commands run: a device over SSH (ssh), and the Target protocol they share."""

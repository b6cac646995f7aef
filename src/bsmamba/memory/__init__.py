"""Training memory: measure and predict one step's peak (``plan``), and step down the
configuration ladder when it does not fit (``ladder``)."""

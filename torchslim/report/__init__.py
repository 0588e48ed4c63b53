"""Tables, plots and run reports."""

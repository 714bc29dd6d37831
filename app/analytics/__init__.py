"""What the flows earned: attribution of orders to emails, figures per flow, A/B tests."""

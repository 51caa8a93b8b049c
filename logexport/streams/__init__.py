"""Log streams: every new entry delivered continuously to a customer's destination."""

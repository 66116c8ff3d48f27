"""Generated data with known truth: the e-commerce funnel, the taste world (behavior histories), MMoE's synthetic regression tasks."""

"""What both stores share to stitch spans into flows and hops: the facts of a span, the grouping rules,
guards.
"""

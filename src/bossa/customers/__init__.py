"""Customers, their contracts (SA_ID) and the products those contracts hold.

The parties every other system refers to: provisioning provisions a contract's products,
billing bills its account, alerts notify its subscriber. Later modules add their own
tables that point here.
"""

from bossa.customers.sample import SampleOperator, load_sample

__all__ = ["SampleOperator", "load_sample"]

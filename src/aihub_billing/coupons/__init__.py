"""Coupons: percent or fixed discounts on subscription fees, redeemed atomically."""

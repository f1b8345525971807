"""Emulated testbeds: a topology brought up as network namespaces on this machine."""

"""Failover: alerts in (webhook and srd's own rules), runbooks decided under guards, steps
executed through actuators and recorded in the journal."""

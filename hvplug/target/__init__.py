"""Export block volumes to initiators (iSCSI targets on tgtd)."""

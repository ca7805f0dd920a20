"""Templates shipped with hvplug (installed as ``hvplug.xml_templates``)."""

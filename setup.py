"""Packaging glue: metadata lives in setup.cfg.

The top-level ``xml_templates/`` folder ships inside the wheel as the
``hvplug.xml_templates`` package so installed code finds its templates with
``importlib.resources`` (see ``hvplug/templates.py``).
"""
import setuptools

setuptools.setup(
    packages=setuptools.find_packages(include=["hvplug", "hvplug.*"])
    + ["hvplug.xml_templates"],
    package_dir={"hvplug.xml_templates": "xml_templates"},
)

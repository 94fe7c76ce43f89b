"""Reports of the engine: the solar inventory of a result layer (the ``inventory``
request, ``protocol.inventory.InventoryParams``; ``docs/inventory.md``).

Modules:
    crs        the working CRS (projected, metres; else the local UTM zone), moving
               geometries, meridian convergence
    layers     reading polygon layers (pyogrio)
    shape      an installation's minimum rotated rectangle, azimuth, rectangularity
    inventory  installations, modules and capacity, per building / zone / class
    change     change between two dates: new, removed, grown, shrunk
    figures    the report's map, size histogram and azimuth rose (matplotlib)
    report     the self-contained HTML report
    outputs    the GeoPackage and the CSV
    job        the daemon's job function: read, compute, write
"""

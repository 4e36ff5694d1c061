-- Why a site's Dask Gateway is not usable, as the leading replica last checked it (NULL: it is,
-- or the site has none); it does not make the site unavailable (hub/src/sites/dask.rs).
ALTER TABLE site_health ADD COLUMN dask_problem TEXT;

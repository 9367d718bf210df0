"""The read path: the query layer over a store's readers, the HTTP query API and its OpenAPI document."""

"""The JSON objects of Provisor, each described once (pydantic v2 models).

- ``inputs``: the bodies the API and the pages hand to the services. A service validates
  its plain dict with the model (:meth:`Input.check`), which also gives the OpenAPI
  request schema. Checks that need the database stay in the services.
- ``outputs``: what the API answers (:meth:`Output.of` builds the JSON from a row), and
  the OpenAPI response schemas.
- ``peer``: the tasks proxy protocol (``/proxy/v1``), both directions.
- ``http_module``: what Provisor sends to an http module endpoint and what it answers.
- ``fields``: the vocabulary of field types (text, ids, whole numbers, amounts, ...), each
  a type that validates with Provisor's messages and describes itself in JSON Schema.

Adding a field to an object is one line in its model; enums come from the models'
declarations (``Operation.KINDS``, ``Service.STATUSES``, ...), so they follow by themselves.
"""

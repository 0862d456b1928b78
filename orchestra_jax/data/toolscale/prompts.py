"""Synthesis prompts (paper Tables 6–14, paraphrased in our own words; paper_spec §7.4).

Each prompt asks for a single JSON value; the LLM driver validates it against the JSON schema
next to the prompt and re-asks (with the validation error) or drops it.
"""

SYSTEM = ("You generate data for a customer-service simulation. Reply with exactly one JSON "
          "value and nothing else (no prose; a ```json fence is allowed).")

SUBJECTS = """List the main kinds of records (subjects) a {domain} business keeps in its database,
e.g. customers, orders, bookings. Reply with a JSON list of 2 to 5 short snake_case plural names."""
SUBJECTS_SCHEMA = {"type": "array", "minItems": 2, "maxItems": 8,
                   "items": {"type": "string", "pattern": "^[a-z][a-z0-9_]{1,40}$"}}

SCHEMA = """Here is an example database schema for a movie theatre, keyed by movie id:
{{"movies": {{"<movie_id>": {{"movie_id": "string", "title": "string", "genres": ["string"],
  "runtime_minutes": "integer", "rating": "string", "status": "one of: showing, ended"}}}}}}
Write a similar schema for a {domain} business covering these subjects: {subjects}.
Every subject is an object keyed by its id; every record repeats its id in a field named
<singular>_id; include at least one status-like field with a fixed set of values.
Reply with a JSON object {{subject: {{field: type description}}}}."""
SCHEMA_SCHEMA = {"type": "object", "minProperties": 1,
                 "additionalProperties": {"type": "object", "minProperties": 2}}

ENTRIES = """Database schema for a {domain} business:
{schema}
Write {n} realistic records for the subject "{subject}" that follow the schema exactly (same
field names and types; ids unique and consistent). Reply with a JSON object {{id: record}}."""
ENTRIES_SCHEMA = {"type": "object", "minProperties": 1,
                  "additionalProperties": {"type": "object", "minProperties": 2}}

VALIDATE = """Schema:
{schema}
Record:
{entry}
Check three things: (1) the record's fields and types match the schema, (2) values are
consistent (ids, names, references), (3) the content is logical and realistic.
Reply with JSON {{"schema_aligned": true|false, "consistent": true|false, "realistic": true|false}}."""
VALIDATE_SCHEMA = {"type": "object", "required": ["schema_aligned", "consistent", "realistic"],
                   "properties": {k: {"type": "boolean"}
                                  for k in ("schema_aligned", "consistent", "realistic")}}

TOOLS = """A {domain} database has these collections (path, id field, some fields):
{collections}
Tools are declared as JSON objects. Example:
{demo}
Propose up to {max_tools} tools a {domain} support agent uses most (lookups, searches and
status changes), in the same format ("x-op".kind is one of get, search, update, create; paths
and fields must exist in the collections above). Reply with a JSON list of tool objects."""
TOOLS_SCHEMA = {"type": "array", "minItems": 1, "maxItems": 40,
                "items": {"type": "object", "required": ["type", "function", "x-op"]}}

INTENTS = """Tools of a {domain} support agent:
{tools}
Propose {n} different, realistic reasons a customer contacts support that these tools can
resolve and that change the database. Reply with a JSON list of short strings."""
INTENTS_SCHEMA = {"type": "array", "minItems": 1, "maxItems": 50,
                  "items": {"type": "string", "minLength": 8, "maxLength": 400}}

TASK_FORMAT = """{{"reason_for_call": "...", "known_info": "what the customer knows (names, emails, ids)",
 "task_instructions": "how the customer behaves", "actions": [{{"name": tool, "arguments": {{...}}}}],
 "communicate_info": ["short facts the agent must tell the customer"]}}"""
TASK_SCHEMA = {
    "type": "object",
    "required": ["reason_for_call", "known_info", "actions", "communicate_info"],
    "properties": {
        "reason_for_call": {"type": "string", "minLength": 8},
        "known_info": {"type": "string"}, "task_instructions": {"type": "string"},
        "actions": {"type": "array", "minItems": 1, "maxItems": 12,
                    "items": {"type": "object", "required": ["name", "arguments"],
                              "properties": {"name": {"type": "string"},
                                             "arguments": {"type": "object"}}}},
        "communicate_info": {"type": "array", "maxItems": 5,
                             "items": {"type": "string", "minLength": 1, "maxLength": 80}}}}

TASK = """Tools of a {domain} support agent:
{tools}
Some database records:
{records}
Customer intent: {intent}
Turn the intent into a concrete task about the records above: the exact tool calls that
resolve it (using real ids and values from the records) and the facts the agent must tell
the customer. Reply with JSON in this format:
""" + TASK_FORMAT

EVOLVE = """Tools of a {domain} support agent:
{tools}
Some database records:
{records}
Existing task:
{task}
Make the task harder: add a constraint, involve one more record, or make the situation
trickier, keeping it solvable with the tools and real values from the records. Reply with JSON
in this format:
""" + TASK_FORMAT

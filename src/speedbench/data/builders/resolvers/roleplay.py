"""Role-play sources.

Reference (speed.py ``_fetch_all_turns_data``):
- RoleBench: the file is ``source.replace("tree", "raw") + "/<cfg>/role_specific/test.jsonl"`` with
  ``<cfg>`` the 2nd ``_`` field of src_id; the ``_<n>`` numbers of src_id (as many as the row has turns)
  are rows of it. Turn 1 is the row's template filled with ``role_name`` and the role's description
  (``profiles-eng/desc.json`` at the pinned revision), a newline and the first question; later turns are
  the later questions with a leading ``"<role>, "`` / ``" <role>,"`` removed.
- CoSER: the file is ``source.replace("tree", "raw") + "/test/test_set.json"``; src_id's 2nd ``_`` field is
  the row; one of its ``major_characters`` is drawn and the CoSER role-play prompt is filled from
  its profile, the scenario, the other (non-null) profiles and its motivation.
"""

from __future__ import annotations

from typing import Any

from speedbench.data.builders.resolvers import prompts
from speedbench.data.builders.resolvers.base import (
    ResolveContext,
    ResolveError,
    Resolver,
    SourcePin,
    field_of,
    fill,
    first_turn,
    index_part,
    ints_after_underscores,
    n_turns,
    src_id_of,
    template_of,
)
from speedbench.data.builders.resolvers.loading import SourceFile, row_at, source_file

ROLEBENCH_PROFILES_REVISION = "a57ed54f9613921e4a5f1b63601a558cd5acf971"
ROLEBENCH_PROFILES_PATH = "profiles-eng/desc.json"


class RoleBench(Resolver):
    name = "rolebench"
    match = "ZenMoore/RoleBench"
    default_pin = SourcePin(
        "ZenMoore/RoleBench",
        ROLEBENCH_PROFILES_REVISION,
        note="questions: file under the row's source URL; profiles: profiles-eng/desc.json",
    )

    def profiles_file(self) -> SourceFile:
        rev = self.pin.revision or "main"
        url = f"https://huggingface.co/datasets/{self.pin.repo_id}/raw/{rev}/{ROLEBENCH_PROFILES_PATH}"
        return SourceFile(self.pin.repo_id, self.pin.revision, ROLEBENCH_PROFILES_PATH, url)

    def resolve(self, row: dict[str, Any], ctx: ResolveContext) -> list[str]:
        src_id = src_id_of(row)
        parts = src_id.split("_")
        if len(parts) < 3:
            raise ResolveError(f"src_id {src_id!r} is not <name>_<config>_<row>...")
        url = str(row["source"]).replace("tree", "raw") + f"/{parts[1]}/role_specific/test.jsonl"
        ds = ctx.sources.files(self.name, [source_file(url, self.pin.repo_id)])
        rows = [row_at(ds, i) for i in ints_after_underscores(src_id)[: n_turns(row)]]
        if not rows:
            raise ResolveError(f"src_id {src_id!r} names no rows")
        role = str(field_of(rows[0], "role"))
        profiles = ctx.sources.files(self.name, [self.profiles_file()])
        if role not in profiles.column_names:
            raise ResolveError(f"role {role!r} has no description in {ROLEBENCH_PROFILES_PATH}")
        description = profiles[role][0]
        first = (
            fill(template_of(first_turn(row)), role_name=role, role_description_and_catchphrases=description)
            + "\n"
            + str(rows[0]["question"])
        )
        rest = [str(r["question"]).removeprefix(f"{role}, ").removeprefix(f" {role},") for r in rows[1:]]
        return [first, *rest]


class CoSER(Resolver):
    name = "coser"
    match = "Neph0s/CoSER"
    default_pin = SourcePin("Neph0s/CoSER", None, from_row=True, note="test/test_set.json under the row's source URL")

    def resolve(self, row: dict[str, Any], ctx: ResolveContext) -> list[str]:
        url = str(row["source"]).replace("tree", "raw") + "/test/test_set.json"
        ds = ctx.sources.files(self.name, [source_file(url, self.pin.repo_id)])
        src = row_at(ds, index_part(src_id_of(row), "second"))
        characters = list(field_of(src, "major_characters") or [])
        if not characters:
            raise ResolveError("CoSER row has no major_characters")
        character = ctx.rng(self.name, str(row["question_id"])).choice(characters)
        profiles: dict[str, Any] = dict(field_of(src, "character_profiles") or {})
        motivation = next(
            (k["motivation"] for k in (src.get("key_characters") or []) if k.get("name") == character),
            prompts.COSER_NO_MOTIVATION,
        )
        others = "\n\n".join(
            f"{name}: {text}" for name, text in profiles.items() if name != character and text is not None
        )
        return [
            prompts.COSER_TEMPLATE.format(
                character=character,
                character_profile=profiles.get(character),
                book_name=field_of(src, "book"),
                scenario=field_of(src, "scenario"),
                other_character_profiles_str=others,
                motivation=motivation,
            )
        ]

"""One comment per task: the comment id lives in NATS KV (key = task id), the body comes from render.

``CommentKeeper.upsert`` POSTs the first time (and stores the id with ``kv.create`` so two racing
instances cannot both keep a comment), PATCHes afterwards, and POSTs again if the comment was
deleted on GitHub.
"""

from __future__ import annotations

import logging

import msgspec
import nats.js.errors
from nats.js.kv import KeyValue

from .errors import CommentGoneError
from .github import GitHubClient
from .render import marker

logger = logging.getLogger(__name__)


class CommentRef(msgspec.Struct, frozen=True, kw_only=True):
    """What the KV entry of a task holds."""

    comment_id: int
    repo: str
    number: int


_decoder = msgspec.json.Decoder(CommentRef)


class CommentIds:
    """task id → CommentRef in the comments KV bucket."""

    def __init__(self, kv: KeyValue) -> None:
        self._kv = kv

    async def get(self, task_id: str) -> CommentRef | None:
        try:
            entry = await self._kv.get(task_id)
        except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
            return None
        if not entry.value:
            return None
        try:
            return _decoder.decode(entry.value)
        except msgspec.DecodeError:
            logger.warning("unreadable comment id for task %s in KV; treating as absent", task_id)
            return None

    async def create(self, task_id: str, ref: CommentRef) -> CommentRef:
        """Store ``ref`` unless the task already has one; returns the ref that won."""
        try:
            await self._kv.create(task_id, msgspec.json.encode(ref))
        except nats.js.errors.KeyWrongLastSequenceError:
            existing = await self.get(task_id)
            if existing is not None:
                return existing
            await self._kv.put(task_id, msgspec.json.encode(ref))
        return ref

    async def replace(self, task_id: str, ref: CommentRef) -> None:
        await self._kv.put(task_id, msgspec.json.encode(ref))


class CommentKeeper:
    """Keeps one comment per task in sync with a rendered body."""

    def __init__(self, github: GitHubClient, ids: CommentIds) -> None:
        self._github = github
        self._ids = ids
        self.posts = 0
        self.patches = 0

    async def upsert(self, task_id: str, repo: str, number: int, body: str) -> int:
        """Make the task's comment show ``body``; returns the comment id."""
        ref = await self._ids.get(task_id)
        if ref is None:
            return await self._post_first(task_id, repo, number, body)
        try:
            await self._github.update_comment(ref.repo, ref.comment_id, body)
            self.patches += 1
            return ref.comment_id
        except CommentGoneError:
            logger.info("comment %s of task %s was deleted; posting a new one", ref.comment_id, task_id)
        comment_id = await self._github.create_comment(repo, number, body, marker=marker(task_id))
        self.posts += 1
        await self._ids.replace(task_id, CommentRef(comment_id=comment_id, repo=repo, number=number))
        return comment_id

    async def _post_first(self, task_id: str, repo: str, number: int, body: str) -> int:
        comment_id = await self._github.create_comment(repo, number, body, marker=marker(task_id))
        self.posts += 1
        mine = CommentRef(comment_id=comment_id, repo=repo, number=number)
        winner = await self._ids.create(task_id, mine)
        if winner == mine:
            return comment_id
        # Another instance stored its comment first: keep theirs, remove ours.
        logger.warning("task %s already has comment %s; removing duplicate %s", task_id, winner, comment_id)
        await self._github.delete_comment(repo, comment_id)
        try:
            await self._github.update_comment(winner.repo, winner.comment_id, body)
            self.patches += 1
        except CommentGoneError:
            return await self.upsert(task_id, repo, number, body)
        return winner.comment_id

"""The fair proxy's API as pydantic models: what its OpenAPI schema shows, and the validation
that names what is wrong in a request the fast reader (:mod:`ruleeraser.serve.bodies`) did not
take.

Example
-------
>>> api = api_models(width=2, max_rows=10, bound=1e30)
>>> api.request.model_validate_json('{"instances": [[0.5, 1]]}').instances
[[0.5, 1.0]]
>>> api.request_schema["properties"]["instances"]["items"]["maxItems"]
2
"""

from __future__ import annotations

from typing import Annotated, Any, NamedTuple

from pydantic import BaseModel, ConfigDict, Field


class ApiModels(NamedTuple):
    """The request model and its OpenAPI schema, the answer, the error and the health models."""

    request: type[BaseModel]
    request_schema: dict[str, Any]
    response: type[BaseModel]
    error: type[BaseModel]
    health: type[BaseModel]


def api_models(width: int, max_rows: int, bound: float) -> ApiModels:
    """The models for rows of ``width`` numbers within ``±bound``, at most ``max_rows``."""
    Number = Annotated[float, Field(allow_inf_nan=False, ge=-bound, le=bound)]
    Label = str | int | float | bool

    class PredictRequest(BaseModel):
        model_config = ConfigDict(strict=True, extra="forbid")
        instances: list[list[Number]] = Field(
            min_length=1,
            description=f"rows of {width} finite numbers within ±{bound:.2g} (beyond it the "
            f"patches' float32 arithmetic could overflow), at most {max_rows} rows",
        )
        return_original: bool = Field(False, description="also return the upstream's answer")

    schema = PredictRequest.model_json_schema()
    schema["properties"]["instances"]["maxItems"] = max_rows
    schema["properties"]["instances"]["items"].update(minItems=width, maxItems=width)

    class PredictResponse(BaseModel):
        predictions: list[list[float]] = Field(
            description="fair probabilities, one row per instance, columns as in classes"
        )
        original: list[list[float]] | None = Field(
            None, description="the upstream's probabilities (only with return_original)"
        )
        classes: list[Label]

    class ErrorResponse(BaseModel):
        detail: str

    return ApiModels(PredictRequest, schema, PredictResponse, ErrorResponse, _health(Label))


def _health(Label: Any) -> type[BaseModel]:
    class Health(BaseModel):
        status: str
        input_shape: list[int]
        classes: list[Label]  # type: ignore[valid-type]
        biases: list[str]
        strength: float = Field(description="how much of the patches' rule is subtracted")
        rule_scale: list[float] = Field(
            description="per bias, the scale of its patch's bias-dependent part"
        )
        offset: list[float] = Field(description="per class, the log-space shift added")
        goal: dict[str, Any] | None = Field(
            description="the goal the removal was chosen for, with the gap expected at fit "
            "and its interval (points); null without a goal"
        )
        prior: str = Field(description="'balanced' (Eq. 19) or 'keep' (the class prior kept)")
        class_prior: dict[str, dict[str, float]] | None = Field(
            description="per bias, each class's share in the prior its patch holds"
        )
        max_rows: int
        max_value: float = Field(description="largest |value| an instance may hold")
        coalesce: bool = Field(description="concurrent requests share upstream calls")
        max_inflight: int | None = Field(
            description="most upstream calls out at once when coalescing (else no limit)"
        )
        min_inflight: int | None = Field(description="fewest the limit goes down to")
        inflight_limit: int | None = Field(
            description="upstream calls allowed out at once now, learnt from their call times"
        )
        upstream_fastest_ms: float | None = Field(
            description="shortest recent upstream call (the limit's no-load time), if any"
        )
        max_batch_rows: int | None = Field(description="most rows in one coalesced call")
        requests: int = Field(description="prediction requests sent on by this process")
        upstream_calls: int = Field(description="upstream calls this process made for them")
        upstream_rows: int = Field(description="rows in those calls")
        internal_errors: int = Field(description="requests answered 500 by this process")
        upstream_checked: bool
        upstream_headers: list[str] | None = Field(
            None,
            description="names of the headers sent on every upstream call (never their "
            "values); absent when there are none",
        )

    return Health

"""Which profile a run gets: does the implementation serve the conformance
control service? Asked through server reflection where the daemon offers
it, else by calling the service and seeing whether it is UNIMPLEMENTED."""

from __future__ import annotations

import grpc

from choo.conformance.v1 import control_pb2, control_pb2_grpc

from .contract import CONTROL_SERVICE

PROFILES = ("control", "black-box", "reference")
PROBE_DEADLINE_S = 10.0


def _listed_by_reflection(channel: grpc.Channel) -> bool | None:
    """Whether reflection lists the control service; None if the daemon has
    no reflection."""
    try:
        from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
    except ImportError:
        return None
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    try:
        answers = stub.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
            timeout=PROBE_DEADLINE_S)
        for answer in answers:
            names = {service.name for service in answer.list_services_response.service}
            return CONTROL_SERVICE.full_name in names
    except grpc.RpcError:
        return None
    return None


def serves_control(address: str) -> bool:
    with grpc.insecure_channel(address) as channel:
        listed = _listed_by_reflection(channel)
        if listed is not None:
            return listed
        try:
            control_pb2_grpc.ConformanceControlStub(channel).ListSubscriptions(
                control_pb2.ListSubscriptionsRequest(job_id=""), timeout=PROBE_DEADLINE_S)
        except grpc.RpcError as error:
            return error.code() != grpc.StatusCode.UNIMPLEMENTED
        return True

//! What pygocentrus learns from and asks of rtnetlink: interfaces, bridge
//! ports, link events, the clsact qdisc of the netlink hook path, and the
//! `fq` root qdisc that holds delayed packets; and the few links and
//! addresses the demo's lab is made of.

use std::{
    net::IpAddr,
    os::fd::{AsFd, AsRawFd as _},
};

use futures::{StreamExt, TryStreamExt, channel::mpsc::UnboundedReceiver};
use rtnetlink::{
    Handle, LinkBridge, LinkMessageBuilder, LinkUnspec, LinkVeth, MulticastGroup,
    packet_core::{DefaultNla, NLM_F_ACK, NLM_F_CREATE, NLM_F_REPLACE, NLM_F_REQUEST, NetlinkMessage, NetlinkPayload},
    packet_route::{
        AddressFamily, RouteNetlinkMessage,
        link::{InfoData, InfoKind, InfoVeth, LinkAttribute, LinkInfo, LinkMessage},
        nsid::{NsidAttribute, NsidMessage},
        tc::{TcAttribute, TcHandle, TcMessage, TcOption},
    },
};
use thiserror::Error;

use crate::rules::FqParams;

#[derive(Debug, Error)]
pub enum NetlinkError {
    #[error("opening a netlink socket: {0}")]
    Socket(#[from] std::io::Error),
    #[error("netlink: {0}")]
    Request(#[from] rtnetlink::Error),
    #[error("interface {0} not found")]
    NoSuchLink(String),
    #[error("netlink: {0}")]
    Reply(&'static str),
}

impl NetlinkError {
    /// The errno the kernel answered with, if it answered with one.
    pub fn errno(&self) -> Option<i32> {
        match self {
            NetlinkError::Request(rtnetlink::Error::NetlinkError(e)) => e.raw_code().checked_neg(),
            _ => None,
        }
    }
}

// From linux/pkt_sched.h.
const TCA_FQ_PLIMIT: u16 = 1;
const TCA_FQ_FLOW_PLIMIT: u16 = 2;
const TCA_FQ_HORIZON: u16 = 14;
const TCA_FQ_HORIZON_DROP: u16 = 15;

/// An interface, as far as pygocentrus cares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub is_bridge: bool,
    pub mac: Option<[u8; 6]>,
    /// The bridge (or bond) this interface is enslaved to.
    pub controller: Option<u32>,
    pub is_veth: bool,
    /// For an interface tied to another network namespace (a veth whose
    /// peer lives there): that namespace, by the id this namespace gives it
    /// (`IFLA_LINK_NETNSID`, `link-netnsid` in `ip link`).
    pub peer_netnsid: Option<i32>,
}

impl Link {
    fn from_message(msg: &LinkMessage) -> Self {
        let mut link = Link {
            index: msg.header.index,
            name: String::new(),
            is_bridge: false,
            mac: None,
            controller: None,
            is_veth: false,
            peer_netnsid: None,
        };
        for attr in &msg.attributes {
            match attr {
                LinkAttribute::IfName(n) => link.name.clone_from(n),
                LinkAttribute::Controller(c) => link.controller = Some(*c),
                LinkAttribute::Address(a) => link.mac = <[u8; 6]>::try_from(a.as_slice()).ok(),
                LinkAttribute::LinkNetNsId(id) => link.peer_netnsid = Some(*id),
                LinkAttribute::LinkInfo(infos) => {
                    for info in infos {
                        match info {
                            LinkInfo::Kind(InfoKind::Bridge) => link.is_bridge = true,
                            LinkInfo::Kind(InfoKind::Veth) => link.is_veth = true,
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        link
    }
}

/// A change seen on the link multicast group.
#[derive(Debug)]
pub enum LinkEvent {
    /// A link appeared or changed (also: a port joined or left a bridge).
    Changed(Link),
    Removed(u32),
}

pub struct Netlink {
    handle: Handle,
}

impl Netlink {
    /// Opens a request socket; its connection runs on the tokio runtime.
    pub fn open() -> Result<Self, NetlinkError> {
        let (conn, handle, _) = rtnetlink::new_connection()?;
        tokio::spawn(conn);
        Ok(Self { handle })
    }

    pub async fn links(&self) -> Result<Vec<Link>, NetlinkError> {
        let msgs: Vec<LinkMessage> = self.handle.link().get().execute().try_collect().await?;
        Ok(msgs.iter().map(Link::from_message).collect())
    }

    pub async fn link(&self, name: &str) -> Result<Option<Link>, NetlinkError> {
        Ok(self.links().await?.into_iter().find(|l| l.name == name))
    }

    /// Like [`Netlink::link`], for an interface that must exist.
    pub async fn existing_link(&self, name: &str) -> Result<Link, NetlinkError> {
        self.link(name).await?.ok_or_else(|| NetlinkError::NoSuchLink(name.to_owned()))
    }

    pub async fn ports_of(&self, bridge: u32) -> Result<Vec<Link>, NetlinkError> {
        Ok(self.links().await?.into_iter().filter(|l| l.controller == Some(bridge)).collect())
    }

    /// The id this namespace gives the network namespace `netns` refers to
    /// (`ip netns identify`'s question, by descriptor), or `None` if it has
    /// none. The kernel numbers a namespace here as soon as a link of this
    /// namespace that leads there is listed, so list links first.
    pub async fn nsid_of(&self, netns: impl AsFd) -> Result<Option<i32>, NetlinkError> {
        let fd = u32::try_from(netns.as_fd().as_raw_fd()).map_err(|_| NetlinkError::Reply("a negative descriptor"))?;
        let mut msg = NsidMessage::default();
        msg.attributes.push(NsidAttribute::Fd(fd));
        let mut req = NetlinkMessage::from(RouteNetlinkMessage::GetNsId(msg));
        req.header.flags = NLM_F_REQUEST;
        let mut replies = self.handle.clone().request(req)?;
        while let Some(reply) = replies.next().await {
            match reply.payload {
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewNsId(m)) => {
                    let id = m.attributes.iter().find_map(|a| match a {
                        NsidAttribute::Id(id) => Some(*id),
                        _ => None,
                    });
                    // -1: NETNSA_NSID_NOT_ASSIGNED.
                    return Ok(id.filter(|id| *id >= 0));
                }
                NetlinkPayload::Error(e) => return Err(rtnetlink::Error::NetlinkError(e).into()),
                _ => {}
            }
        }
        Err(NetlinkError::Reply("no answer to RTM_GETNSID"))
    }

    /// The kinds of the qdiscs on `index` (e.g. `noqueue`, `clsact`, `fq`).
    pub async fn qdisc_kinds(&self, index: u32) -> Result<Vec<String>, NetlinkError> {
        let msgs: Vec<TcMessage> = self.handle.qdisc().get().index(index as i32).execute().try_collect().await?;
        Ok(msgs
            .iter()
            .filter(|m| m.header.index == index as i32)
            .filter_map(|m| {
                m.attributes.iter().find_map(|a| match a {
                    TcAttribute::Kind(k) => Some(k.clone()),
                    _ => None,
                })
            })
            .collect())
    }

    /// The root qdisc of `index`: its kind and handle. A device's default
    /// root qdisc (noqueue, pfifo_fast, mq...) has handle 0.
    pub async fn root_qdisc(&self, index: u32) -> Result<Option<(String, TcHandle)>, NetlinkError> {
        let msgs: Vec<TcMessage> = self.handle.qdisc().get().index(index as i32).execute().try_collect().await?;
        Ok(msgs.iter().filter(|m| m.header.index == index as i32 && m.header.parent == TcHandle::ROOT).find_map(|m| {
            m.attributes.iter().find_map(|a| match a {
                TcAttribute::Kind(k) => Some((k.clone(), m.header.handle)),
                _ => None,
            })
        }))
    }

    /// Makes `fq` the root qdisc of `index` (rtnetlink has no builder for
    /// fq's options, so the request is composed here).
    pub async fn set_root_fq(&self, index: u32, fq: &FqParams) -> Result<(), NetlinkError> {
        let mut msg = TcMessage::with_index(index as i32);
        msg.header.parent = TcHandle::ROOT;
        let u32_opt = |kind: u16, v: u32| TcOption::Other(DefaultNla::new(kind, v.to_ne_bytes().to_vec()));
        msg.attributes.push(TcAttribute::Kind("fq".to_owned()));
        msg.attributes.push(TcAttribute::Options(vec![
            u32_opt(TCA_FQ_PLIMIT, fq.limit),
            u32_opt(TCA_FQ_FLOW_PLIMIT, fq.flow_limit),
            u32_opt(TCA_FQ_HORIZON, fq.horizon_us),
            TcOption::Other(DefaultNla::new(TCA_FQ_HORIZON_DROP, vec![0])),
        ]));
        let mut req = NetlinkMessage::from(RouteNetlinkMessage::NewQueueDiscipline(msg));
        req.header.flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE;
        let mut handle = self.handle.clone();
        let mut responses = handle.request(req)?;
        while let Some(msg) = responses.next().await {
            if let NetlinkPayload::Error(e) = msg.payload
                && e.code.is_some()
            {
                return Err(rtnetlink::Error::NetlinkError(e).into());
            }
        }
        Ok(())
    }

    /// Deletes the root qdisc of `index`: the device goes back to its default.
    pub async fn del_root_qdisc(&self, index: u32) -> Result<(), NetlinkError> {
        let mut req = self.handle.qdisc().del(index as i32);
        req.message_mut().header.parent = TcHandle::ROOT;
        req.execute().await?;
        Ok(())
    }

    /// Removes the clsact qdisc of `index` (and with it any filter on it).
    pub async fn del_clsact(&self, index: u32) -> Result<(), NetlinkError> {
        let mut req = self.handle.qdisc().del(index as i32);
        let m = req.message_mut();
        m.header.parent = TcHandle::CLSACT;
        m.header.handle = TcHandle { major: 0xffff, minor: 0 };
        req.execute().await?;
        Ok(())
    }
}

/// Subscribes to link changes. Subscribe before listing, so that nothing
/// that happens in between is missed.
pub fn link_events() -> Result<UnboundedReceiver<LinkEvent>, NetlinkError> {
    let (conn, _handle, messages) = rtnetlink::new_multicast_connection(&[MulticastGroup::Link])?;
    tokio::spawn(conn);
    let (tx, rx) = futures::channel::mpsc::unbounded();
    tokio::spawn(async move {
        let mut messages = messages;
        while let Some((msg, _)) = messages.next().await {
            let Some(event) = link_event(msg) else { continue };
            if tx.unbounded_send(event).is_err() {
                break;
            }
        }
    });
    Ok(rx)
}

fn link_event(msg: NetlinkMessage<RouteNetlinkMessage>) -> Option<LinkEvent> {
    match msg.payload {
        NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(m)) => {
            Some(LinkEvent::Changed(Link::from_message(&m)))
        }
        // An AF_BRIDGE RTM_DELLINK only says a port left its bridge: the
        // link lives on, and the RTM_NEWLINK that comes with it says so.
        NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelLink(m))
            if m.header.interface_family != AddressFamily::Bridge =>
        {
            Some(LinkEvent::Removed(m.header.index))
        }
        _ => None,
    }
}

impl Netlink {
    /// How many tc filters sit on the ingress and egress hooks of `index`.
    pub async fn filter_count(&self, index: u32) -> Result<usize, NetlinkError> {
        let mut n = 0;
        for egress in [false, true] {
            let mut h = self.handle.traffic_filter(index as i32);
            let req = if egress { h.get().egress() } else { h.get().ingress() };
            let msgs: Vec<TcMessage> = req.execute().try_collect().await?;
            n += msgs.iter().filter(|m| m.header.index == index as i32).count();
        }
        Ok(n)
    }
}

/// Building a lab (`pygocentrus demo`): `ip link add` and `ip addr add`.
impl Netlink {
    /// A bridge, up, with STP off (ports forward at once).
    pub async fn add_bridge(&self, name: &str) -> Result<Link, NetlinkError> {
        self.handle.link().add(LinkBridge::new(name).build()).execute().await?;
        self.existing_link(name).await
    }

    /// A veth pair: `name` here, up, a port of bridge `controller`; `peer`,
    /// down, in the namespace `peer_netns` refers to. (The peer cannot be
    /// brought up in the same request: the kernel opens it before pairing it
    /// and answers ENOTCONN.)
    pub async fn add_bridge_port_veth(
        &self,
        name: &str,
        controller: u32,
        peer: &str,
        peer_netns: impl AsFd,
    ) -> Result<Link, NetlinkError> {
        let peer = LinkUnspec::new_with_name(peer).setns_by_fd(peer_netns.as_fd().as_raw_fd()).build();
        let veth = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
            .name(name)
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
            .controller(controller)
            .up()
            .build();
        self.handle.link().add(veth).execute().await?;
        self.existing_link(name).await
    }

    pub async fn set_up(&self, index: u32) -> Result<(), NetlinkError> {
        Ok(self.handle.link().set(LinkUnspec::new_with_index(index).up().build()).execute().await?)
    }

    pub async fn add_address(&self, index: u32, addr: IpAddr, prefix_len: u8) -> Result<(), NetlinkError> {
        Ok(self.handle.address().add(index, addr, prefix_len).execute().await?)
    }
}

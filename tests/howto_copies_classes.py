"""The Twisted classes of the how-to's copy and cache listings, in a module of their own.

A Copyable's copy tag is its class's ``module.Name``; keeping the classes out
of the peer script (which runs as ``__main__``) gives them stable tags, such
as ``howto_copies_classes.CopyPond``, that the trio_pb port in
test_howto_copies_twisted.py uses too.  Only twisted_howto_copies_peer.py
imports this module, in its own process.
"""

from twisted.spread import pb


def say(*words):
    print(*words, flush=True)


# copy: a plain Copyable, rebuilt by the receiver as its own RemoteCopy.


class LilyPond:
    def setStuff(self, color, num_frogs):
        self.color = color
        self.numFrogs = num_frogs

    def countFrogs(self):
        say(f"{self.numFrogs} frogs in the {self.color} pond")


class CopyPond(LilyPond, pb.Copyable):
    pass


class ReceiverPond(pb.RemoteCopy, LilyPond):
    pass


# An unregistered Copyable: the receiver refuses it.
class StrayPond(LilyPond, pb.Copyable):
    pass


# copy2: the sender chooses the state sent, the receiver what it does with it.


class FrogPond:
    def __init__(self, num_frogs, num_toads):
        self.numFrogs = num_frogs
        self.numToads = num_toads

    def count(self):
        return self.numFrogs + self.numToads


class SenderPond(FrogPond, pb.Copyable):
    def getStateToCopy(self):
        state = dict(vars(self))
        state["frogsAndToads"] = state.pop("numFrogs") + state.pop("numToads")
        return state


class ReceivedPond(pb.RemoteCopy):
    def setCopyableState(self, state):
        self.__dict__ = state

    def count(self):
        return self.frogsAndToads


# cache: a Cacheable whose copy follows the owner's changes until it is dropped.


class MasterDuckPond(pb.Cacheable):
    def __init__(self, ducks):
        self.observers = []
        self.ducks = ducks

    def count(self):
        say(f"I have [{len(self.ducks)}] ducks")

    def addDuck(self, duck):
        self.ducks.append(duck)
        for observer in self.observers:
            observer.callRemote("addDuck", duck)

    def removeDuck(self, duck):
        self.ducks.remove(duck)
        for observer in self.observers:
            observer.callRemote("removeDuck", duck)

    def getStateToCacheAndObserveFor(self, perspective, observer):
        self.observers.append(observer)
        return self.ducks

    def stoppedObserving(self, perspective, observer):
        self.observers.remove(observer)
        say("stopped observing; observers left:", len(self.observers))


class SlaveDuckPond(pb.RemoteCache):
    def count(self):
        return len(self.cacheducks)

    def getDucks(self):
        return self.cacheducks

    def setCopyableState(self, state):
        say("cache - setting ducks", state)
        self.cacheducks = state

    def observe_addDuck(self, new_duck):
        say("cache - addDuck", new_duck)
        self.cacheducks.append(new_duck)

    def observe_removeDuck(self, dead_duck):
        say("cache - removeDuck", dead_duck)
        self.cacheducks.remove(dead_duck)


pb.setUnjellyableForClass(CopyPond, ReceiverPond)
pb.setUnjellyableForClass(SenderPond, ReceivedPond)
pb.setUnjellyableForClass(MasterDuckPond, SlaveDuckPond)
